//! Notifications (`[notify]`): a real HTTPS webhook receiver (hyper over rustls, its certificate
//! from our own pki code) and a real SMTP server (aiosmtpd from PyPI in a test virtualenv,
//! `tests/notify/smtp_sink.py`). Without Python or PyPI the mail test prints `SKIPPED: <reason>`
//! on stderr and returns.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use hanoi247::config::NodeConfig;
use hanoi247::node::RunningNode;
use hanoi247::proto::{MessageState, Precedence};
use hanoi247::trust::pki::CertificateAuthority;
use http_body_util::BodyExt as _;
use rustls::pki_types::pem::PemObject as _;
use tokio::net::TcpListener;

use crate::support::python::{Venv, cached_venv};
use crate::support::*;

const SECRET: &str = "webhook-test-secret-0123456789";

/// One call the webhook receiver got: its headers and body.
#[derive(Clone, Debug)]
struct Call {
    signature: String,
    notification_id: String,
    body: Vec<u8>,
}

/// An HTTPS server on 127.0.0.1 that records every POST and answers 200.
struct Receiver {
    port: u16,
    ca_file: PathBuf,
    calls: Arc<Mutex<Vec<Call>>>,
}

async fn webhook_receiver(dir: &Path) -> Receiver {
    let ca = CertificateAuthority::generate("webhook test CA", 2).unwrap();
    let server = ca.issue_desk_server("hanoi247-test", code("ZZ"), &["127.0.0.1".to_owned()], 2).unwrap();
    let ca_file = dir.join("webhook-ca.pem");
    std::fs::write(&ca_file, ca.cert_pem()).unwrap();
    let certs = rustls::pki_types::CertificateDer::pem_slice_iter(server.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(server.key_pem.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let recorded = Arc::clone(&calls);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let acceptor = acceptor.clone();
            let recorded = Arc::clone(&recorded);
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service =
                    hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                        let recorded = Arc::clone(&recorded);
                        async move {
                            let header = |name: &str| {
                                request
                                    .headers()
                                    .get(name)
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or("")
                                    .to_owned()
                            };
                            let (signature, notification_id) =
                                (header("x-hanoi247-signature"), header("x-hanoi247-notification-id"));
                            let body = request
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes().to_vec())
                                .unwrap_or_default();
                            recorded.lock().unwrap().push(Call { signature, notification_id, body });
                            Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                                hyper::body::Bytes::from_static(b"ok"),
                            )))
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    Receiver { port, ca_file, calls }
}

/// The real SMTP server, killed when dropped.
struct SmtpSink(Child);

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_smtp(python: &Path, port: u16, out: &Path, log: &Path) -> SmtpSink {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/notify/smtp_sink.py");
    let log = std::fs::File::create(log).unwrap();
    let child = Command::new(python)
        .arg(script)
        .arg(port.to_string())
        .arg(out)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    SmtpSink(child)
}

/// The `.eml` files the SMTP sink wrote.
fn mails(out: &Path) -> Vec<String> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(out)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .collect();
    names.sort();
    names.iter().map(|p| std::fs::read_to_string(p).unwrap()).collect()
}

fn append_notify(net: &Network, node: &str, section: &str) {
    let path = net.config_path(node);
    let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    writeln!(file, "\n{section}").unwrap();
}

/// The value of one sample of `/metrics` (0 when absent).
async fn metric(port: u16, sample: &str) -> f64 {
    let sample = sample.to_owned();
    tokio::task::spawn_blocking(move || crate::operator_view::metric(port, &sample).unwrap_or(0.0))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flash_request_gives_one_signed_webhook_call_and_one_mail_that_survives_a_restart() {
    let requirements = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/notify/requirements.txt");
    if Command::new("python3").arg("--version").output().is_err() {
        let _ =
            writeln!(std::io::stderr(), "SKIPPED: the notification mail test needs python3 (for aiosmtpd)");
        return;
    }
    let python =
        match tokio::task::spawn_blocking(move || cached_venv("notify-venv", &requirements)).await.unwrap() {
            Venv::Ready(python) => python,
            Venv::PypiUnreachable(reason) => {
                let _ = writeln!(
                    std::io::stderr(),
                    "SKIPPED: the notification mail test needs aiosmtpd from PyPI: {reason}"
                );
                return;
            }
            Venv::Unavailable(reason) => {
                let _ = writeln!(std::io::stderr(), "SKIPPED: the notification mail test: {reason}");
                return;
            }
        };

    let mut net = Network::new(&["FR", "VN"]).await;
    let receiver = webhook_receiver(net.dir()).await;
    let secret_file = net.dir().join("webhook.secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let smtp_port = free_port().await;
    let console_port = net.config("FR").console.listen.port();
    append_notify(
        &net,
        "FR",
        &format!(
            r#"[notify]
console_url = "https://127.0.0.1:{console_port}"
retry_initial = "100ms"
retry_max = "300ms"
timeout = "5s"

[[notify.webhook]]
name = "pager"
url = "https://127.0.0.1:{}/hook?team=duty"
secret_file = "{}"
ca_file = "{}"
events = ["request_arrived"]
precedences = ["FLASH"]

[[notify.email]]
name = "duty-mail"
host = "127.0.0.1"
port = {smtp_port}
security = "plain"
from = "hanoi247 FR <hanoi247@fr.example>"
to = ["duty@fr.example"]
events = ["request_arrived"]
precedences = ["FLASH", "IMMEDIATE"]
"#,
            receiver.port,
            secret_file.display(),
            receiver.ca_file.display(),
        ),
    );
    net.start("FR").await;
    net.start("VN").await;
    let metrics_port = net.config("FR").metrics.listen.port();

    // A ROUTINE request first: neither target wants it.
    let mut vn = net.desk("VN");
    let routine = submit(&mut vn, advice_request("FR", Precedence::Routine, "routine question")).await;
    wait_state(&mut vn, &routine, MessageState::Delivered).await;
    let flash = submit(&mut vn, preservation_request("FR")).await;
    wait_state(&mut vn, &flash, MessageState::Delivered).await;

    // The webhook gets exactly the FLASH, signed.
    eventually("the webhook is called", async || !receiver.calls.lock().unwrap().is_empty()).await;
    let call = receiver.calls.lock().unwrap()[0].clone();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
    let hex_signature = call.signature.strip_prefix("sha256=").expect("sha256= prefix");
    ring::hmac::verify(&key, &call.body, &hex::decode(hex_signature).unwrap()).expect("the HMAC verifies");
    let json: serde_json::Value = serde_json::from_slice(&call.body).unwrap();
    assert_eq!(json["event"], "request_arrived");
    assert_eq!(json["message_id"], flash.as_str());
    assert_eq!(json["precedence"], "FLASH");
    assert_eq!(json["peer"], "VN");
    assert_eq!(json["node"], "FR");
    assert_eq!(json["id"], call.notification_id.as_str(), "the header carries the id to deduplicate on");
    assert_eq!(json["link"], format!("https://127.0.0.1:{console_port}/message/{flash}"));
    assert!(!json["deadline"].as_str().unwrap().is_empty(), "{json}");
    let text = String::from_utf8_lossy(&call.body);
    assert!(
        !text.contains("Preserve mailbox") && !text.contains("Deletion announced"),
        "no subject or body: {text}"
    );

    // The mail server is down: attempts fail and are counted, the notification stays pending.
    let failed = r#"hanoi247_notifications_failed_total{target="duty-mail",event="request_arrived"}"#;
    eventually("a failed mail attempt is counted", async || metric(metrics_port, failed).await >= 1.0).await;
    let pending = r#"hanoi247_notifications_pending{target="duty-mail"}"#;
    eventually("the mail is pending", async || metric(metrics_port, pending).await == 1.0).await;

    // FR restarts; then the mail server comes up and the mail arrives, once.
    net.stop("FR").await;
    let out = net.dir().join("mail");
    std::fs::create_dir_all(&out).unwrap();
    let _smtp = start_smtp(&python, smtp_port, &out, &net.dir().join("smtp.log"));
    net.start("FR").await;
    eventually("the mail arrives after the restart", async || !mails(&out).is_empty()).await;
    let sent = r#"hanoi247_notifications_sent_total{target="duty-mail",event="request_arrived"}"#;
    eventually("the mail is recorded as sent", async || metric(metrics_port, sent).await == 1.0).await;
    eventually("nothing is pending", async || metric(metrics_port, pending).await == 0.0).await;
    let mail = mails(&out);
    assert_eq!(mail.len(), 1, "exactly one mail: {mail:?}");
    assert!(mail[0].contains(&flash), "{}", mail[0]);
    assert!(mail[0].contains("FLASH") && mail[0].contains("VN"), "{}", mail[0]);
    assert!(mail[0].contains("X-Envelope-To: duty@fr.example"), "{}", mail[0]);
    assert!(!mail[0].contains("Preserve mailbox") && !mail[0].contains("Deletion announced"), "{}", mail[0]);
    assert_eq!(receiver.calls.lock().unwrap().len(), 1, "the webhook was not called again after the restart");
    net.stop("FR").await;
    net.stop("VN").await;
}

#[tokio::test]
async fn a_bad_notify_section_is_refused_naming_the_key() {
    let net = Network::new(&["FR"]).await;
    let receiver_ca = net.dir().join("absent-ca.pem");
    let start = async |section: &str| -> String {
        let text = std::fs::read_to_string(net.config_path("FR")).unwrap();
        // Beside the original, so its relative paths resolve the same way.
        let path = net.config_path("FR").with_file_name("bad.toml");
        std::fs::write(&path, format!("{text}\n{section}")).unwrap();
        let config = match NodeConfig::load(&path) {
            Ok(config) => config,
            Err(error) => return error.to_string(),
        };
        let peer = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let desk = TcpListener::bind("127.0.0.1:0").await.unwrap();
        match RunningNode::start_on(config, peer, desk).await {
            Ok(node) => {
                node.shutdown().await.unwrap();
                "started".to_owned()
            }
            Err(error) => error.to_string(),
        }
    };
    let webhook = |url: &str, secret: &str| {
        format!(
            "[[notify.webhook]]\nname = \"pager\"\nurl = \"{url}\"\nsecret_file = \"{secret}\"\nca_file = \"{}\"\nevents = [\"request_arrived\"]\n",
            receiver_ca.display()
        )
    };

    let missing = net.dir().join("no-such.secret");
    let error = start(&webhook("https://127.0.0.1:1/hook", &missing.display().to_string())).await;
    assert!(error.contains("notify.webhook[0].secret_file") && error.contains("no-such.secret"), "{error}");

    let error = start(&webhook("http://127.0.0.1:1/hook", "x")).await;
    assert!(error.contains("notify.webhook[0].url") && error.contains("https://"), "{error}");

    let empty = net.dir().join("empty.secret");
    std::fs::write(&empty, "\n").unwrap();
    let error = start(&webhook("https://127.0.0.1:1/hook", &empty.display().to_string())).await;
    assert!(error.contains("notify.webhook[0].secret_file") && error.contains("empty"), "{error}");

    let secret = net.dir().join("good.secret");
    std::fs::write(&secret, "s3cret\n").unwrap();
    let error = start(&webhook("https://127.0.0.1:1/hook", &secret.display().to_string())).await;
    assert!(error.contains("notify.webhook[0].ca_file"), "{error}");

    let error = start(
        "[[notify.email]]\nname = \"mail\"\nhost = \"smtp.example\"\nport = 25\nsecurity = \"plain\"\n\
         from = \"a@b.example\"\nto = [\"c@d.example\"]\nevents = [\"request_overdue\"]\n",
    )
    .await;
    assert!(error.contains("notify.email[0].security") && error.contains("127.0.0.1"), "{error}");

    let error = start(
        "[[notify.email]]\nname = \"mail\"\nhost = \"127.0.0.1\"\nport = 25\nsecurity = \"plain\"\n\
         from = \"a@b.example\"\nto = [\"c@d.example\"]\nevents = [\"request_overdue\"]\nprecedences = [\"URGENT\"]\n",
    )
    .await;
    assert!(error.contains("notify.email[0].precedences") && error.contains("URGENT"), "{error}");

    let error = start(
        "[[notify.email]]\nname = \"mail\"\nhost = \"127.0.0.1\"\nport = 25\nsecurity = \"plain\"\n\
         from = \"a@b.example\"\nto = [\"c@d.example\"]\nevents = [\"request_overdue\"]\n\
         credentials_file = \"/nonexistent/smtp.credentials\"\n",
    )
    .await;
    assert!(error.contains("notify.email[0].credentials_file"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stays_unreachable_is_announced_once_per_failure_streak() {
    // DE is in the directory but never started.
    let mut net = Network::new(&["FR", "DE"]).await;
    let receiver = webhook_receiver(net.dir()).await;
    let secret_file = net.dir().join("webhook.secret");
    std::fs::write(&secret_file, SECRET).unwrap();
    append_notify(
        &net,
        "FR",
        &format!(
            "[notify]\nretry_initial = \"100ms\"\nretry_max = \"300ms\"\npeer_unreachable_after = 2\n\n\
             [[notify.webhook]]\nname = \"pager\"\nurl = \"https://127.0.0.1:{}/hook\"\nsecret_file = \"{}\"\n\
             ca_file = \"{}\"\nevents = [\"peer_unreachable\"]\n",
            receiver.port,
            secret_file.display(),
            receiver.ca_file.display()
        ),
    );
    net.start("FR").await;
    let metrics_port = net.config("FR").metrics.listen.port();
    let mut fr = net.desk("FR");
    submit(&mut fr, advice_request("DE", Precedence::Flash, "for a peer that is down")).await;

    eventually("the pager hears that DE is unreachable", async || !receiver.calls.lock().unwrap().is_empty())
        .await;
    let call = receiver.calls.lock().unwrap()[0].clone();
    let json: serde_json::Value = serde_json::from_slice(&call.body).unwrap();
    assert_eq!(
        (json["event"].as_str(), json["peer"].as_str()),
        (Some("peer_unreachable"), Some("DE")),
        "{json}"
    );
    assert!(!String::from_utf8_lossy(&call.body).contains("for a peer that is down"), "no subject");
    // Delivery keeps failing well past the threshold: still one call, nothing pending.
    eventually("more failed calls to DE", async || {
        metric(metrics_port, r#"hanoi247_delivery_failures_total{peer="DE"}"#).await >= 5.0
    })
    .await;
    let sent = r#"hanoi247_notifications_sent_total{target="pager",event="peer_unreachable"}"#;
    eventually("the call is recorded as sent", async || metric(metrics_port, sent).await == 1.0).await;
    let pending = r#"hanoi247_notifications_pending{target="pager"}"#;
    eventually("nothing is pending", async || metric(metrics_port, pending).await == 0.0).await;
    assert_eq!(receiver.calls.lock().unwrap().len(), 1, "one notification per failure streak");
    net.stop("FR").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_could_not_write_is_announced_once_it_writes_again() {
    let net = Network::new(&["VN", "FR"]).await;
    let receiver = webhook_receiver(net.dir()).await;
    let secret_file = net.dir().join("webhook.secret");
    std::fs::write(&secret_file, SECRET).unwrap();
    append_notify(
        &net,
        "VN",
        &format!(
            "[notify]\nretry_initial = \"100ms\"\nretry_max = \"300ms\"\n\n\
             [[notify.webhook]]\nname = \"pager\"\nurl = \"https://127.0.0.1:{}/hook\"\nsecret_file = \"{}\"\n\
             ca_file = \"{}\"\nevents = [\"store_unwritable\"]\n",
            receiver.port,
            secret_file.display(),
            receiver.ca_file.display()
        ),
    );
    // A "disk" that fills up (see storage_failure.rs).
    let vn_process = net.spawn_with_file_limit("VN", 2048).await;
    let mut vn = net.desk("VN");
    let mut submitted = 0;
    loop {
        assert!(submitted < 400, "the disk never filled up");
        let mut request = advice_request("FR", Precedence::Routine, &format!("filler {submitted}"));
        request.body = "x".repeat(16 * 1024);
        if vn.submit(request).await.is_err() {
            break;
        }
        submitted += 1;
    }
    assert!(
        receiver.calls.lock().unwrap().is_empty(),
        "nothing can be stored (or sent) while the store cannot write"
    );
    vn_process.lift_file_limit();
    eventually("the pager hears the store could not write", async || {
        !receiver.calls.lock().unwrap().is_empty()
    })
    .await;
    let call = receiver.calls.lock().unwrap()[0].clone();
    let json: serde_json::Value = serde_json::from_slice(&call.body).unwrap();
    assert_eq!(json["event"], "store_unwritable", "{json}");
    assert_eq!(json["node"], "VN", "{json}");
    assert!(json["detail"].as_str().unwrap().contains("could not write"), "{json}");
    drop(vn_process);
}
