//! Sends the notifications the store holds (`store::notifications`) to the `[notify]` targets:
//! HTTPS webhooks (a JSON body signed with HMAC-SHA256) and e-mail over SMTP (lettre). One task
//! per target, so a slow mail server delays no webhook; a failed attempt is retried with
//! exponential backoff and full jitter, and a restart resumes from the store, so none is lost.
//!
//! Each notification carries its own id (`X-Hanoi247-Notification-Id`, the mail's Message-ID):
//! after a crash between sending and recording, it is sent again and the receiver deduplicates.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport as _, Tokio1Executor};
use tokio_util::sync::CancellationToken;

use crate::config::{NotifyConfig, SmtpSecurity};
use crate::runtime::context::NodeContext;
use crate::runtime::metrics::labels;
use crate::store::notifications::Notification;

/// How often a target looks for due notifications besides being woken by new events.
const POLL_EVERY: Duration = Duration::from_secs(1);

/// A `[notify]` target cannot be used: names the key and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct NotifyError {
    /// The config key, e.g. `notify.webhook[0].secret_file`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

fn refuse(key: String, message: impl ToString) -> NotifyError {
    NotifyError { key, message: message.to_string() }
}

/// One target, ready to send.
pub struct Target {
    /// Its name in `[notify]`.
    pub name: String,
    channel: Channel,
}

enum Channel {
    Webhook(Webhook),
    Email(Email),
}

struct Webhook {
    uri: http::Uri,
    host: String,
    port: u16,
    secret: ring::hmac::Key,
    tls: Arc<rustls::ClientConfig>,
}

struct Email {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
}

/// Reads every file `[notify]` names and builds the targets; the first problem is an error
/// naming its key (the node then refuses to start).
pub fn prepare(config: &NotifyConfig) -> Result<Vec<Target>, NotifyError> {
    let mut targets = Vec::new();
    for (i, webhook) in config.webhook.iter().enumerate() {
        let key = |name: &str| format!("notify.webhook[{i}].{name}");
        let secret = read_secret(&webhook.secret_file).map_err(|e| refuse(key("secret_file"), e))?;
        let uri: http::Uri = webhook.url.parse().map_err(|e| refuse(key("url"), e))?;
        let host = uri.host().ok_or_else(|| refuse(key("url"), "no host"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let client = webhook.client_cert.as_deref().zip(webhook.client_key.as_deref());
        let tls = crate::trust::tls::webhook_client_config(&webhook.ca_file, client).map_err(|e| {
            refuse(key(if client.is_some() { "ca_file/client_cert/client_key" } else { "ca_file" }), e)
        })?;
        targets.push(Target {
            name: webhook.name.clone(),
            channel: Channel::Webhook(Webhook {
                port: uri.port_u16().unwrap_or(443),
                host,
                uri,
                secret: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes()),
                tls,
            }),
        });
    }
    for (i, email) in config.email.iter().enumerate() {
        let key = |name: &str| format!("notify.email[{i}].{name}");
        let from: Mailbox = email.from.parse().map_err(|e| refuse(key("from"), e))?;
        let to = email
            .to
            .iter()
            .map(|to| to.parse::<Mailbox>().map_err(|e| refuse(key("to"), format!("{to:?}: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let tls = match email.security {
            SmtpSecurity::Plain => Tls::None,
            security => {
                let mut parameters = TlsParameters::builder(email.host.clone());
                if let Some(ca_file) = &email.ca_file {
                    let pem = std::fs::read(ca_file)
                        .map_err(|e| refuse(key("ca_file"), format!("{}: {e}", ca_file.display())))?;
                    let certificate = Certificate::from_pem(&pem).map_err(|e| refuse(key("ca_file"), e))?;
                    parameters = parameters
                        .certificate_store(CertificateStore::None)
                        .add_root_certificate(certificate);
                }
                let parameters = parameters.build_rustls().map_err(|e| refuse(key("ca_file"), e))?;
                if security == SmtpSecurity::Tls {
                    Tls::Wrapper(parameters)
                } else {
                    Tls::Required(parameters)
                }
            }
        };
        let mut transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(email.host.clone())
            .port(email.port)
            .tls(tls)
            .timeout(Some(config.timeout));
        if let Some(file) = &email.credentials_file {
            let text = read_secret(file).map_err(|e| refuse(key("credentials_file"), e))?;
            let (user, password) = text.split_once(':').ok_or_else(|| {
                refuse(key("credentials_file"), format!("{}: expected user:password", file.display()))
            })?;
            transport = transport.credentials(Credentials::new(user.to_owned(), password.to_owned()));
        }
        targets.push(Target {
            name: email.name.clone(),
            channel: Channel::Email(Email { transport: transport.build(), from, to }),
        });
    }
    Ok(targets)
}

/// A secret file's text without its trailing newline; an empty one is refused.
fn read_secret(path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let text = text.trim_end_matches(['\r', '\n']).to_owned();
    if text.is_empty() {
        return Err(format!("{}: the file is empty", path.display()));
    }
    Ok(text)
}

/// Runs one sending task per target, and the removal of sent notifications older than
/// `[retention] events`, until `stop`.
pub async fn run(context: Arc<NodeContext>, targets: Vec<Target>, stop: CancellationToken) {
    let mut tasks: Vec<_> = targets
        .into_iter()
        .map(|target| tokio::spawn(run_target(Arc::clone(&context), target, stop.clone())))
        .collect();
    tasks.push(tokio::spawn(prune_sent(Arc::clone(&context), stop.clone())));
    for task in tasks {
        let _ = task.await;
    }
}

/// How often certificate and CRL expiry is looked at.
const EXPIRY_CHECK_EVERY: Duration = Duration::from_secs(3600);

/// Announces (`certificate_expiring`) each certificate or CRL that runs out within
/// `[notify] expiry_warning`, once per file and expiry while the node runs (a renewed file has
/// another expiry and is announced again when that one nears), until `stop`.
pub async fn watch_expiry(context: Arc<NodeContext>, stop: CancellationToken) {
    let mut announced: std::collections::HashSet<(std::path::PathBuf, std::time::SystemTime)> =
        Default::default();
    loop {
        let tls = context.config.tls.clone();
        let expiries =
            tokio::task::spawn_blocking(move || crate::trust::tls::expiries(&tls)).await.unwrap_or_default();
        let horizon =
            crate::domain::timestamp::plus(context.clock.now(), context.config.notify.expiry_warning);
        for (path, at) in expiries {
            if at > horizon || !announced.insert((path.clone(), at)) {
                continue;
            }
            let when = crate::domain::timestamp::rfc3339(&crate::domain::timestamp::from_system(at));
            let notice = crate::store::notifications::Notice {
                deadline: when.clone(),
                detail: format!("{} expires at {when}: renew it", path.display()),
                ..Default::default()
            };
            tracing::warn!(file = %path.display(), expires_at = %when, "certificate or CRL expires soon");
            if let Err(error) =
                context.store.notify(crate::config::NotifyEvent::CertificateExpiring, &notice).await
            {
                tracing::error!(%error, "cannot store the expiry notification");
                announced.remove(&(path, at));
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(EXPIRY_CHECK_EVERY) => {}
        }
    }
}

async fn prune_sent(context: Arc<NodeContext>, stop: CancellationToken) {
    loop {
        let before = context.clock.now().checked_sub(context.config.retention.events);
        if let Some(before) = before {
            match context.store.prune_sent_notifications(before).await {
                Ok(0) => {}
                Ok(removed) => tracing::info!(removed, "sent notifications past [retention] events removed"),
                Err(error) => tracing::error!(%error, "cannot remove old sent notifications"),
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(context.config.retention.interval) => {}
        }
    }
}

async fn run_target(context: Arc<NodeContext>, target: Target, stop: CancellationToken) {
    let mut durable = context.store.durable_events();
    let config = &context.config.notify;
    loop {
        let due = context.store.due_notifications(&target.name, context.clock.now());
        match due {
            Ok(due) => {
                for notification in due {
                    let sent = tokio::select! {
                        () = stop.cancelled() => return,
                        sent = tokio::time::timeout(config.timeout, send(&context, &target, &notification)) => sent,
                    };
                    let outcome =
                        sent.unwrap_or_else(|_| Err(format!("no answer within {:?}", config.timeout)));
                    record(&context, &target, &notification, outcome).await;
                }
            }
            Err(error) => tracing::error!(target = %target.name, %error, "cannot read pending notifications"),
        }
        if let Ok(pending) = context.store.pending_notifications() {
            let count = pending.iter().filter(|n| n.target == target.name).count();
            let gauge =
                context.metrics.notifications_pending.get_or_create(&labels(&[("target", &target.name)]));
            gauge.set(i64::try_from(count).unwrap_or(i64::MAX));
        }
        tokio::select! {
            () = stop.cancelled() => return,
            _ = durable.changed() => {}
            () = tokio::time::sleep(POLL_EVERY) => {}
        }
    }
}

async fn record(
    context: &NodeContext,
    target: &Target,
    notification: &Notification,
    outcome: Result<(), String>,
) {
    let config = &context.config.notify;
    let target_labels = labels(&[("target", &target.name), ("event", &notification.event)]);
    match outcome {
        Ok(()) => {
            context.metrics.notifications_sent.get_or_create(&target_labels).inc();
            tracing::info!(target = %target.name, id = %notification.id, event = %notification.event, "notification sent");
            if let Err(error) = context.store.notification_sent(notification).await {
                tracing::error!(target = %target.name, id = %notification.id, %error, "notification sent but not recorded; it will be sent again");
            }
        }
        Err(error) => {
            context.metrics.notifications_failed.get_or_create(&target_labels).inc();
            let ceiling = config
                .retry_initial
                .saturating_mul(1u32 << notification.attempts.min(20))
                .min(config.retry_max);
            // Full jitter, at least 100ms so a target that fails at once does not spin.
            let retry_in = ceiling.mul_f64(fastrand::f64()).max(Duration::from_millis(100));
            tracing::warn!(target = %target.name, id = %notification.id, %error, attempt = notification.attempts + 1, ?retry_in, "notification failed");
            if let Err(error) = context.store.notification_failed(notification, &error, retry_in) {
                tracing::error!(target = %target.name, id = %notification.id, %error, "cannot record a failed notification");
            }
        }
    }
}

async fn send(context: &NodeContext, target: &Target, notification: &Notification) -> Result<(), String> {
    match &target.channel {
        Channel::Webhook(webhook) => send_webhook(context, webhook, notification).await,
        Channel::Email(email) => send_email(context, email, notification).await,
    }
}

/// The one-line summary: what, from whom, precedence (never subject or body).
pub fn headline(notification: &Notification) -> String {
    let node = &notification.node;
    let what = match notification.event.as_str() {
        "request_arrived" => format!(
            "{} {} request from {}",
            notification.precedence, notification.request_type, notification.peer
        ),
        "request_overdue" => format!(
            "OVERDUE {} {} request (peer {})",
            notification.precedence, notification.request_type, notification.peer
        ),
        "peer_unreachable" => format!("peer {} unreachable", notification.peer),
        "store_unwritable" => "the store could not write".to_owned(),
        "certificate_expiring" => "a certificate or revocation list expires soon".to_owned(),
        "preservation_expiring" => format!(
            "preservation {} request (peer {}) lapses soon",
            notification.precedence, notification.peer
        ),
        other => other.to_owned(),
    };
    // A drill must never be taken for a real request, nor a real one for a drill.
    let exercise = if notification.exercise { "EXERCISE " } else { "" };
    format!("[hanoi247 {node}] {exercise}{what}")
}

/// The link to the message's console page, if the console URL is configured.
fn link(context: &NodeContext, notification: &Notification) -> String {
    let base = context.config.notify.console_url.trim_end_matches('/');
    if base.is_empty() || notification.message_id.is_empty() {
        return String::new();
    }
    format!("{base}/message/{}", notification.message_id)
}

/// The webhook's JSON body.
pub fn webhook_body(notification: &Notification, link: &str) -> Vec<u8> {
    let body = serde_json::json!({
        "id": notification.id,
        "event": notification.event,
        "node": notification.node,
        "at": notification.at,
        "summary": headline(notification),
        "message_id": notification.message_id,
        "request_type": notification.request_type,
        "precedence": notification.precedence,
        "peer": notification.peer,
        "deadline": notification.deadline,
        "detail": notification.detail,
        "exercise": notification.exercise,
        "link": link,
    });
    body.to_string().into_bytes()
}

async fn send_webhook(
    context: &NodeContext,
    webhook: &Webhook,
    notification: &Notification,
) -> Result<(), String> {
    let body = webhook_body(notification, &link(context, notification));
    let signature = ring::hmac::sign(&webhook.secret, &body);
    let tcp = tokio::net::TcpStream::connect((webhook.host.as_str(), webhook.port))
        .await
        .map_err(|e| format!("connect {}:{}: {e}", webhook.host, webhook.port))?;
    let server_name =
        rustls::pki_types::ServerName::try_from(webhook.host.clone()).map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::clone(&webhook.tls))
        .connect(server_name, tcp)
        .await
        .map_err(|e| format!("TLS with {}: {e}", webhook.host))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    let connection = tokio::spawn(connection);
    let authority = webhook.uri.authority().map(|a| a.as_str().to_owned()).unwrap_or_default();
    let path = webhook.uri.path_and_query().map_or("/", |p| p.as_str());
    let request = http::Request::post(path)
        .header(http::header::HOST, authority)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::USER_AGENT, crate::runtime::context::SOFTWARE_VERSION)
        .header("X-Hanoi247-Signature", format!("sha256={}", hex::encode(signature.as_ref())))
        .header("X-Hanoi247-Notification-Id", notification.id.as_str())
        .header("X-Hanoi247-Event", notification.event.as_str())
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let response = sender.send_request(request).await.map_err(|e| e.to_string());
    let outcome = match response {
        Ok(response) if response.status().is_success() => {
            // Read the answer so the connection ends cleanly; its content does not matter.
            let _ = response.into_body().collect().await;
            Ok(())
        }
        Ok(response) => Err(format!("the webhook answered HTTP {}", response.status())),
        Err(error) => Err(error),
    };
    drop(sender);
    connection.abort();
    outcome
}

async fn send_email(context: &NodeContext, email: &Email, notification: &Notification) -> Result<(), String> {
    let link = link(context, notification);
    let mut text = format!("{}\n\n", headline(notification));
    for (label, value) in [
        ("Event", &notification.event),
        ("Node", &notification.node),
        ("At", &notification.at),
        ("Message", &notification.message_id),
        ("Request type", &notification.request_type),
        ("Precedence", &notification.precedence),
        ("Peer", &notification.peer),
        ("Deadline", &notification.deadline),
        ("Detail", &notification.detail),
        ("Console", &link),
    ] {
        if !value.is_empty() {
            text.push_str(&format!("{label}: {value}\n"));
        }
    }
    text.push_str(&format!("Notification id: {}\n", notification.id));
    let domain = email.from.email.domain().to_owned();
    let mut builder = lettre::Message::builder()
        .from(email.from.clone())
        .subject(headline(notification))
        .message_id(Some(format!("<{}@{domain}>", notification.id)));
    for to in &email.to {
        builder = builder.to(to.clone());
    }
    let message = builder.body(text).map_err(|e| e.to_string())?;
    email.transport.send(message).await.map(drop).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::time::SystemTime;

    use super::*;
    use crate::config::NotifyEvent;
    use crate::domain::clock::Clock;
    use crate::node::testing;
    use crate::proto::{MessageState, Precedence};
    use crate::store::notifications::TargetWants;

    fn wants(target: &str, events: &[NotifyEvent], precedences: &[Precedence]) -> TargetWants {
        TargetWants {
            target: target.into(),
            events: events.iter().copied().collect(),
            precedences: precedences.iter().copied().collect::<HashSet<_>>(),
        }
    }

    #[tokio::test]
    async fn request_events_are_stored_for_the_targets_that_want_them_and_sent_only_once_durable() {
        let start = SystemTime::now();
        let manual = Clock::manual(start);
        let (_dir, context) = testing::context(manual.clock()).await;
        let store = &context.store;
        store.set_notification_plan(
            "VN",
            vec![
                wants(
                    "pager",
                    &[NotifyEvent::RequestArrived, NotifyEvent::RequestOverdue],
                    &[Precedence::Flash],
                ),
                wants("mail", &[NotifyEvent::RequestOverdue], &[Precedence::Routine]),
            ],
        );
        let far = start + Duration::from_secs(365 * 86_400);
        let inbound = testing::store_request(&context, MessageState::Received, start, far);
        let outbound = testing::store_request(&context, MessageState::Queued, start, far);

        let pending = store.pending_notifications().unwrap();
        assert_eq!(pending.len(), 1, "only the inbound FLASH arrived: {pending:?}");
        let arrived = &pending[0];
        assert_eq!((arrived.target.as_str(), arrived.event.as_str()), ("pager", "request_arrived"));
        assert_eq!(arrived.message_id, inbound.to_string());
        assert_eq!(
            (arrived.peer.as_str(), arrived.precedence.as_str(), arrived.node.as_str()),
            ("FR", "FLASH", "VN")
        );
        assert!(!arrived.deadline.is_empty());
        assert!(
            store.due_notifications("pager", SystemTime::now()).unwrap().is_empty(),
            "not before its event is durable"
        );
        store.persist().await.unwrap();
        assert_eq!(store.due_notifications("pager", SystemTime::now()).unwrap(), pending);

        manual.advance(context.config.deadlines.flash + Duration::from_secs(1));
        crate::node::deadline_watch::announce_overdue(&context).await.unwrap();
        let overdue: Vec<_> = store
            .pending_notifications()
            .unwrap()
            .into_iter()
            .filter(|n| n.event == "request_overdue")
            .collect();
        let mut ids: Vec<_> = overdue.iter().map(|n| (n.target.as_str(), n.message_id.clone())).collect();
        ids.sort();
        let mut expected = vec![("pager", inbound.to_string()), ("pager", outbound.to_string())];
        expected.sort();
        assert_eq!(ids, expected, "both ends' FLASH overdue, for the pager only (mail wants ROUTINE)");

        // A failed attempt waits for its retry; a sent one leaves the pending set, durably.
        let failed = store.notification_failed(arrived, "refused", Duration::from_secs(60)).unwrap();
        assert_eq!(failed.attempts, 1);
        assert!(
            store.due_notifications("pager", SystemTime::now()).unwrap().iter().all(|n| n.id != arrived.id)
        );
        store.notification_sent(&failed).await.unwrap();
        assert!(store.pending_notifications().unwrap().iter().all(|n| n.id != arrived.id));
        let sent = store.sent_notifications().unwrap();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].id, arrived.id);
        assert!(!sent[0].sent_at.is_empty());

        // Sent ones are removed once old; pending ones never.
        assert_eq!(
            store.prune_sent_notifications(SystemTime::now() - Duration::from_secs(3600)).await.unwrap(),
            0
        );
        assert_eq!(
            store.prune_sent_notifications(SystemTime::now() + Duration::from_secs(1)).await.unwrap(),
            1
        );
        assert!(store.sent_notifications().unwrap().is_empty());
        assert_eq!(store.pending_notifications().unwrap().len(), 2, "the two overdue ones stay");
    }

    #[test]
    fn the_webhook_body_and_headline_carry_no_subject_or_body() {
        let notification = Notification {
            id: "0190".into(),
            target: "pager".into(),
            event: "request_arrived".into(),
            node: "FR".into(),
            at: "2026-12-04T18:00:00Z".into(),
            message_id: "m1".into(),
            request_type: "PRESERVATION".into(),
            precedence: "FLASH".into(),
            peer: "VN".into(),
            deadline: "2026-12-04T18:15:00Z".into(),
            detail: "request received".into(),
            exercise: false,
            after_event: 1,
            attempts: 0,
            next_attempt_ms: 0,
            last_error: String::new(),
            sent_at: String::new(),
        };
        assert_eq!(headline(&notification), "[hanoi247 FR] FLASH PRESERVATION request from VN");
        let drill = Notification { exercise: true, ..notification.clone() };
        assert_eq!(headline(&drill), "[hanoi247 FR] EXERCISE FLASH PRESERVATION request from VN");
        let drill_body: serde_json::Value = serde_json::from_slice(&webhook_body(&drill, "")).unwrap();
        assert_eq!(drill_body["exercise"], true);
        let body: serde_json::Value =
            serde_json::from_slice(&webhook_body(&notification, "https://x/message/m1")).unwrap();
        let keys: Vec<_> = body.as_object().unwrap().keys().cloned().collect();
        assert!(!keys.iter().any(|k| k == "subject" || k == "body" || k == "case_reference"), "{keys:?}");
        assert_eq!(body["link"], "https://x/message/m1");
    }
}
