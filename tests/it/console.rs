//! Issue 8 (desk console): the node's HTTPS console over our mTLS, driven by a small HTTP/1.1
//! client over tokio-rustls with the client certificates `init` made: certificates refused, a
//! FLASH arriving live, acknowledging with the form token, the form token required, roles refused
//! server-side, agencies seeing only their own, the CSP, and field errors of the new-request form
//! (the form's own and the desk's, shown next to the field they name).

use std::sync::Arc;

use hanoi247::config::ClientConfig;
use hanoi247::domain::access::Role;
use hanoi247::proto::{GetRequest, MessageState};
use hanoi247::trust::tls;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

/// What the console answered.
pub(crate) struct Page {
    pub(crate) status: u16,
    headers: Vec<(String, String)>,
    pub(crate) body: String,
}

impl Page {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The form token the page carries for scripts (every page has it).
    pub(crate) fn token(&self) -> String {
        between(&self.body, "<meta name=\"csrf-token\" content=\"", "\"").to_owned()
    }
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> &'a str {
    let from = text.find(start).unwrap_or_else(|| panic!("{start} not in {text}")) + start.len();
    let to = text[from..].find(end).unwrap() + from;
    &text[from..to]
}

/// A browser's TLS: client `name` of `node`, trusting that node's local CA, speaking HTTP/1.1.
pub(crate) fn browser(net: &Network, node: &str, name: &str) -> Arc<rustls::ClientConfig> {
    let client = ClientConfig::load(&net.client_config_path_of(node, name)).unwrap();
    let mut config = (*tls::client_config(&client.ca, &client.cert, &client.key).unwrap()).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

pub(crate) fn console_port(net: &Network, node: &str) -> u16 {
    net.config(node).console.listen.port()
}

async fn connect(
    config: Arc<rustls::ClientConfig>,
    port: u16,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.unwrap()
}

/// A POST of a `multipart/form-data` `body` (parts separated by `boundary`) on its own connection.
pub(crate) async fn post_multipart(
    config: Arc<rustls::ClientConfig>,
    port: u16,
    path: &str,
    boundary: &str,
    body: &[u8],
) -> Page {
    let mut stream = connect(config, port).await;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    let read =
        tokio::time::timeout(DEADLINE, stream.read_to_end(&mut raw)).await.expect("the console answers");
    if let Err(error) = read {
        assert_eq!(error.kind(), std::io::ErrorKind::UnexpectedEof, "{error}");
    }
    parse(&String::from_utf8(raw).unwrap())
}

/// One request on its own connection; `form` makes it a POST of that urlencoded body.
pub(crate) async fn fetch(
    config: Arc<rustls::ClientConfig>,
    port: u16,
    path: &str,
    form: Option<&str>,
) -> Page {
    fetch_with(config, port, path, form, "").await
}

/// [`fetch`] with `extra` header lines (each ending in CRLF).
async fn fetch_with(
    config: Arc<rustls::ClientConfig>,
    port: u16,
    path: &str,
    form: Option<&str>,
    extra: &str,
) -> Page {
    let mut stream = connect(config, port).await;
    let head = match form {
        Some(body) => format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n{extra}\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
        None => format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"),
    };
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let read =
        tokio::time::timeout(DEADLINE, stream.read_to_end(&mut raw)).await.expect("the console answers");
    if let Err(error) = read {
        // A peer that closes without close_notify still sent the whole response.
        assert_eq!(error.kind(), std::io::ErrorKind::UnexpectedEof, "{error}");
    }
    parse(&String::from_utf8(raw).unwrap())
}

fn parse(raw: &str) -> Page {
    let (head, body) = raw.split_once("\r\n\r\n").expect("a complete HTTP response");
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let chunked = headers.iter().any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v == "chunked");
    let body = if chunked { unchunk(body) } else { body.to_owned() };
    Page { status, headers, body }
}

fn unchunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").unwrap();
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
}

/// Form fields, urlencoded.
pub(crate) fn urlencode(fields: &[(&str, &str)]) -> String {
    let escape = |text: &str| -> String {
        text.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
                b' ' => "+".into(),
                other => format!("%{other:02X}"),
            })
            .collect()
    };
    fields.iter().map(|(n, v)| format!("{}={}", escape(n), escape(v))).collect::<Vec<_>>().join("&")
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_refuses_browsers_without_a_certificate_of_this_node() {
    let mut net = Network::new(&["VN", "FR"]).await;
    net.start("VN").await;
    let port = console_port(&net, "VN");
    let officer = ClientConfig::load(&net.client_config_path("VN")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in tls::load_certs(&officer.ca).unwrap() {
        roots.add(cert).unwrap();
    }

    // No client certificate at all.
    let mut anonymous = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    anonymous.alpn_protocols = vec![b"http/1.1".to_vec()];
    let alert = handshake_alert(Arc::new(anonymous), port).await;
    assert!(alert.contains("CertificateRequired"), "{alert}");

    // FR's officer: a good certificate, from another CA (FR's local CA).
    let fr = ClientConfig::load(&net.client_config_path("FR")).unwrap();
    let mut foreign = (*tls::client_config(&officer.ca, &fr.cert, &fr.key).unwrap()).clone();
    foreign.alpn_protocols = vec![b"http/1.1".to_vec()];
    let alert = handshake_alert(Arc::new(foreign), port).await;
    assert!(alert.contains("UnknownCA") || alert.contains("BadCertificate"), "{alert}");

    // VN's own officer gets in, with the security headers.
    let page = fetch(browser(&net, "VN", "officer"), port, "/inbox", None).await;
    assert_eq!(page.status, 200, "{}", page.body);
    net.stop("VN").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flash_arrives_live_and_is_acknowledged_with_the_form_token_only() {
    let clients = [("FR", "officer", Role::Officer), ("FR", "audit", Role::Auditor)];
    let mut net = Network::with_clients(&["VN", "FR"], &clients).await;
    net.start("VN").await;
    net.start("FR").await;
    let port = console_port(&net, "FR");
    let officer = browser(&net, "FR", "officer");

    // The officer's open page listens to the event stream.
    let mut events = connect(Arc::clone(&officer), port).await;
    let request =
        format!("GET /events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n\r\n");
    events.write_all(request.as_bytes()).await.unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while !seen.contains("\r\n\r\n") {
        let n = tokio::time::timeout(DEADLINE, events.read(&mut buf)).await.unwrap().unwrap();
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    assert!(seen.to_ascii_lowercase().contains("content-type: text/event-stream"), "{seen}");

    let mut vn = net.desk("VN");
    let id = submit(&mut vn, preservation_request("FR")).await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !(seen.contains(&id) && seen.contains("\"RECEIVED\"")) {
        let n = tokio::time::timeout_at(deadline, events.read(&mut buf))
            .await
            .expect("the event is pushed")
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(seen.contains("event: change"), "{seen}");
    assert!(seen.contains("\"precedence\":\"FLASH\""), "{seen}");

    // The inbox shows it, marked FLASH, with the CSP and no outside host anywhere.
    let inbox = fetch(Arc::clone(&officer), port, "/inbox", None).await;
    assert_eq!(inbox.status, 200);
    assert!(inbox.body.contains(&format!("data-id=\"{id}\"")), "{}", inbox.body);
    assert!(inbox.body.contains("prec-flash"), "{}", inbox.body);
    assert!(inbox.body.contains("Preserve mailbox"));
    let csp = inbox.header("content-security-policy").expect("a CSP");
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert!(
        !inbox.body.contains("<script>") && !inbox.body.contains("http://"),
        "no inline script, no other host"
    );
    let script = fetch(Arc::clone(&officer), port, "/assets/console.js", None).await;
    assert_eq!(script.status, 200);
    assert!(script.header("content-type").unwrap().starts_with("text/javascript"));
    assert!(script.body.contains("EventSource"));

    let page = fetch(Arc::clone(&officer), port, &format!("/message/{id}"), None).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains(&format!("action=\"/message/{id}/acknowledge\"")), "{}", page.body);
    assert!(page.body.contains("preservation.offence") || page.body.contains("Offence"));
    let token = between(&page.body, "name=\"csrf\" value=\"", "\"").to_owned();
    let ack_path = format!("/message/{id}/acknowledge");
    let mut fr = net.desk("FR");
    let state = |message: hanoi247::proto::GetResponse| message.message.unwrap().state();

    // Without the token, or with another client's: refused, nothing changes.
    let refused = fetch(Arc::clone(&officer), port, &ack_path, Some("note=x")).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    let audit = browser(&net, "FR", "audit");
    let audit_token = fetch(Arc::clone(&audit), port, "/inbox", None).await.token();
    assert_ne!(audit_token, token, "the token is bound to the certificate");
    let wrong = urlencode(&[("csrf", &audit_token), ("note", "x")]);
    assert_eq!(fetch(Arc::clone(&officer), port, &ack_path, Some(&wrong)).await.status, 403);
    let current = fr.get(GetRequest { id: id.clone() }).await.unwrap().into_inner();
    assert_eq!(state(current), MessageState::Received);

    // The auditor, with its own valid token, is refused by the desk API itself.
    let by_auditor = fetch(audit, port, &ack_path, Some(&urlencode(&[("csrf", &audit_token)]))).await;
    assert_eq!(by_auditor.status, 403, "{}", by_auditor.body);
    assert!(by_auditor.body.contains("may not call Acknowledge"), "{}", by_auditor.body);
    let current = fr.get(GetRequest { id: id.clone() }).await.unwrap().into_inner();
    assert_eq!(state(current), MessageState::Received);

    // The officer acknowledges from the message page; VN's node hears of it.
    let form = urlencode(&[("csrf", &token), ("note", "taken by the night desk")]);
    let done = fetch(Arc::clone(&officer), port, &ack_path, Some(&form)).await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert_eq!(done.header("location"), Some(format!("/message/{id}").as_str()));
    wait_state(&mut vn, &id, MessageState::Acknowledged).await;
    let after = fetch(Arc::clone(&officer), port, &format!("/message/{id}"), None).await;
    assert!(after.body.contains("acknowledged by officer"), "{}", after.body);

    // The officer disputes the FLASH precedence from the same page; VN sees the proposal.
    assert!(after.body.contains(&format!("action=\"/message/{id}/dispute\"")), "{}", after.body);
    let dispute_path = format!("/message/{id}/dispute");
    let form = urlencode(&[("csrf", &token), ("precedence", "ROUTINE"), ("reason", "no deletion announced")]);
    let disputed = fetch(officer, port, &dispute_path, Some(&form)).await;
    assert_eq!(disputed.status, 303, "{}", disputed.body);
    eventually("VN sees FR's dispute", async || {
        let replies = vn.get(GetRequest { id: id.clone() }).await.unwrap().into_inner().replies;
        replies.iter().filter_map(|r| r.envelope.as_ref()).any(|e| {
            e.kind() == hanoi247::proto::EnvelopeKind::PrecedenceDispute
                && e.precedence() == hanoi247::proto::Precedence::Routine
                && e.body == "no deletion announced"
        })
    })
    .await;

    // An open event stream does not hold the node's shutdown up (it ends with the node).
    let stopping = std::time::Instant::now();
    net.stop("FR").await;
    assert!(stopping.elapsed() < std::time::Duration::from_secs(5), "{:?}", stopping.elapsed());
    drop(events);
    net.stop("VN").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agencies_see_their_own_and_the_form_names_the_missing_field() {
    let clients =
        [("VN", "officer", Role::Officer), ("VN", "police", Role::Agency), ("VN", "cert", Role::Agency)];
    let mut net = Network::with_clients(&["VN", "FR"], &clients).await;
    net.start("VN").await;
    let port = console_port(&net, "VN");
    let of_police = submit(&mut net.desk_as("VN", "police"), preservation_request("FR")).await;
    let of_cert = submit(&mut net.desk_as("VN", "cert"), preservation_request("FR")).await;

    let police = browser(&net, "VN", "police");
    let outbox = fetch(Arc::clone(&police), port, "/outbox", None).await;
    assert_eq!(outbox.status, 200);
    assert!(outbox.body.contains(&of_police), "{}", outbox.body);
    assert!(!outbox.body.contains(&of_cert), "another agency's request is not listed");
    assert_eq!(fetch(Arc::clone(&police), port, &format!("/message/{of_cert}"), None).await.status, 403);
    assert_eq!(fetch(Arc::clone(&police), port, &format!("/message/{of_police}"), None).await.status, 200);
    assert_eq!(fetch(Arc::clone(&police), port, "/inbox", None).await.status, 403, "agencies have no inbox");
    assert_eq!(fetch(police, port, "/network", None).await.status, 403, "operators only");

    // The new-request form: a preservation request without its offence.
    let officer = browser(&net, "VN", "officer");
    let mut desk = net.desk("VN");
    let before = outbox_len(&mut desk).await;
    let form_page = fetch(Arc::clone(&officer), port, "/new", None).await;
    assert_eq!(form_page.status, 200);
    assert!(form_page.body.contains("name=\"preservation.offence\""), "{}", form_page.body);
    let token = form_page.token();
    let mut fields = vec![
        ("csrf", token.as_str()),
        ("destination", "FR"),
        ("request_type", "REQUEST_TYPE_PRESERVATION"),
        ("precedence", "PRECEDENCE_FLASH"),
        ("subject", "Preserve the mailbox"),
        ("handling_code", "HANDLING_CODE_H0"),
        ("preservation.requesting_authority", "Prosecutor A05"),
        ("preservation.offence", ""),
        ("preservation.facts", "phishing"),
        ("preservation.data_to_preserve", "mailbox"),
        ("preservation.link_to_offence", "sent the mails"),
        ("preservation.custodian_or_location", "provider X"),
        ("preservation.necessity", "deleted in 24h"),
        ("preservation.mutual_legal_assistance_to_follow", "on"),
        ("preservation.preservation_days", "90"),
    ];
    let refused = fetch(Arc::clone(&officer), port, "/new", Some(&urlencode(&fields))).await;
    assert_eq!(refused.status, 422, "{}", refused.body);
    let error = between(&refused.body, "id=\"f-preservation-offence-error\" role=\"alert\">", "</p>");
    assert_eq!(error, "required");
    assert!(refused.body.contains("aria-describedby=\"f-preservation-offence-error\""));
    assert!(refused.body.contains("value=\"Prosecutor A05\""), "what was typed is kept");
    assert_eq!(outbox_len(&mut desk).await, before, "nothing stored");

    // Filled in, it is sent: from this console's page, not from another site's.
    fields[7].1 = "fraud";
    let body = urlencode(&fields);
    let foreign = "Origin: https://elsewhere.example\r\n";
    let cross_site = fetch_with(Arc::clone(&officer), port, "/new", Some(&body), foreign).await;
    assert_eq!(cross_site.status, 403, "{}", cross_site.body);
    assert_eq!(outbox_len(&mut desk).await, before, "nothing stored");
    let own = format!("Origin: https://127.0.0.1:{port}\r\n");
    let sent = fetch_with(Arc::clone(&officer), port, "/new", Some(&body), &own).await;
    assert_eq!(sent.status, 303, "{}", sent.body);
    assert_eq!(outbox_len(&mut desk).await, before + 1);
    // And the agency's pages offer only what its role can use.
    let agency_page = fetch(browser(&net, "VN", "police"), port, "/outbox", None).await;
    let nav = between(&agency_page.body, "<nav>", "</nav>");
    assert!(nav.contains("href=\"/new\"") && nav.contains("href=\"/outbox\""), "{nav}");
    assert!(!nav.contains("href=\"/inbox\"") && !nav.contains("href=\"/network\""), "{nav}");
    drop(officer);
    net.stop("VN").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_desks_field_errors_are_shown_next_to_their_fields_and_nothing_is_stored() {
    let mut net = Network::new(&["VN", "FR"]).await;
    net.start("VN").await;
    let port = console_port(&net, "VN");
    let officer = browser(&net, "VN", "officer");
    let mut desk = net.desk("VN");
    let before = outbox_len(&mut desk).await;
    let token = fetch(Arc::clone(&officer), port, "/new", None).await.token();
    let long_subject = "s".repeat(201);
    let form = |destination: &'static str, subject: &str| {
        urlencode(&[
            ("csrf", token.as_str()),
            ("destination", destination),
            ("request_type", "REQUEST_TYPE_TECHNICAL_ADVICE"),
            ("precedence", "PRECEDENCE_ROUTINE"),
            ("subject", subject),
            ("body", "Who holds this address?"),
            ("handling_code", "HANDLING_CODE_H0"),
        ])
    };

    // A destination the form can carry but the directory does not list: the desk's refusal names
    // the field, and the form shows it there (not above the form), with what was typed kept.
    let refused = fetch(Arc::clone(&officer), port, "/new", Some(&form("DE", "Subscriber"))).await;
    assert_eq!(refused.status, 422, "{}", refused.body);
    let error = between(&refused.body, "id=\"f-destination-error\" role=\"alert\">", "</p>");
    assert!(error.starts_with("DE is not in this node"), "{error}");
    assert!(error.contains("(known: FR)"), "{error}");
    assert!(refused.body.contains("aria-describedby=\"f-destination-error\""), "{}", refused.body);
    assert!(!refused.body.contains("class=\"refusal\""), "the error names a field of the form");
    assert!(refused.body.contains("value=\"Subscriber\""), "what was typed is kept");
    assert_eq!(outbox_len(&mut desk).await, before, "nothing stored");

    // A subject over the limit: too large (413), named as the subject's error.
    let too_long = fetch(Arc::clone(&officer), port, "/new", Some(&form("FR", &long_subject))).await;
    assert_eq!(too_long.status, 413, "{}", too_long.body);
    let error = between(&too_long.body, "id=\"f-subject-error\" role=\"alert\">", "</p>");
    assert_eq!(error, "201 characters, at most 200 (limits.max_subject_chars)");
    assert_eq!(outbox_len(&mut desk).await, before, "nothing stored");

    // The same form with both fixed is sent.
    let sent = fetch(officer, port, "/new", Some(&form("FR", "Subscriber"))).await;
    assert_eq!(sent.status, 303, "{}", sent.body);
    assert_eq!(outbox_len(&mut desk).await, before + 1);
    net.stop("VN").await;
}

async fn outbox_len(desk: &mut hanoi247::cli::desk_client::DeskClient) -> usize {
    outbox(desk).await.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_certificate_loses_the_console_too() {
    let net = Network::new(&["VN", "FR"]).await;
    let vn = net.spawn("VN").await;
    let port = console_port(&net, "VN");
    let officer = browser(&net, "VN", "officer");
    assert_eq!(fetch(Arc::clone(&officer), port, "/inbox", None).await.status, 200);
    let mut events = connect(Arc::clone(&officer), port).await;
    let request = format!("GET /events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    events.write_all(request.as_bytes()).await.unwrap();
    let mut buf = [0u8; 4096];
    let n = tokio::time::timeout(DEADLINE, events.read(&mut buf)).await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));

    let cert = ClientConfig::load(&net.client_config_path_of("VN", "officer")).unwrap().cert;
    let revoke = std::process::Command::new(env!("CARGO_BIN_EXE_hanoi247"))
        .args(["certs", "revoke", "--config"])
        .arg(net.config_path("VN"))
        .arg("--cert")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(revoke.status.success(), "{}", String::from_utf8_lossy(&revoke.stderr));
    let status = std::process::Command::new("kill").args(["-HUP", &vn.child.id().to_string()]).status();
    assert!(status.unwrap().success());

    // The open event stream is closed by the reload (it shares the desk listener's material) ...
    let closed = tokio::time::timeout(DEADLINE, async {
        loop {
            match events.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the revoked officer's event stream stays open");
    // ... and a new connection is refused at the handshake.
    let alert = handshake_alert(officer, port).await;
    assert!(alert.contains("CertificateRevoked"), "{alert}");
    drop(vn);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_searches_and_pages_within_agency_scope() {
    let clients = [("VN", "police", Role::Agency), ("VN", "cert", Role::Agency)];
    let mut net = Network::with_clients(&["VN", "FR"], &clients).await;
    net.start("VN").await;
    let port = console_port(&net, "VN");
    let request = |case: &str, subject: &str| hanoi247::proto::SubmitRequest {
        case_reference: case.into(),
        body: "seized wallet".into(),
        ..advice_request("FR", hanoi247::proto::Precedence::Routine, subject)
    };
    let police_desk = net.desk_as("VN", "police");
    // 501: one more than a console page.
    // In rounds of 50 concurrent calls: one connection carries at most
    // limits.max_streams_per_connection (64) at once, and a stream over that is refused.
    let mut of_police = Vec::new();
    for round in 0..11 {
        let mut tasks = Vec::new();
        for i in (round * 50..(round + 1) * 50).filter(|i| *i < 501) {
            let mut desk = police_desk.clone();
            let request = request(if i == 0 { "VN-7" } else { "VN-8" }, &format!("police {i}"));
            tasks.push(tokio::spawn(async move { submit(&mut desk, request).await }));
        }
        for task in tasks {
            of_police.push(task.await.unwrap());
        }
    }
    assert_eq!(of_police.len(), 501);
    let of_cert = submit(&mut net.desk_as("VN", "cert"), request("VN-7", "cert's")).await;

    let police = browser(&net, "VN", "police");
    let first = fetch(Arc::clone(&police), port, "/outbox", None).await;
    assert_eq!(first.status, 200);
    assert!(first.body.contains("role=\"search\""), "a search box");
    let next = between(&first.body, "<a rel=\"next\" href=\"", "\"").replace("&amp;", "&");
    let second = fetch(Arc::clone(&police), port, &next, None).await;
    assert_eq!(second.status, 200, "{next}");
    assert!(!second.body.contains("rel=\"next\""), "two pages in all");
    for id in &of_police {
        let on = [&first, &second].iter().filter(|page| page.body.contains(id.as_str())).count();
        assert_eq!(on, 1, "{id} on exactly one page");
    }
    assert!(!first.body.contains(&of_cert) && !second.body.contains(&of_cert), "cert's is not police's");

    // Search by case reference and by a word, within the agency's own.
    let found = fetch(Arc::clone(&police), port, "/outbox?case=vn-7", None).await;
    assert!(found.body.contains(&of_police[0]) && !found.body.contains(&of_cert), "{}", found.body);
    assert!(!found.body.contains(&of_police[1]));
    assert!(found.body.contains("value=\"vn-7\""), "the search stays in the box");
    let cert = browser(&net, "VN", "cert");
    let found = fetch(Arc::clone(&cert), port, "/outbox?q=Wallet&case=VN-7", None).await;
    assert!(found.body.contains(&of_cert) && !found.body.contains(&of_police[0]));

    // A page token that is not one: refused naming it, nothing changed.
    let bad = fetch(Arc::clone(&police), port, "/outbox?page=nonsense", None).await;
    assert_eq!(bad.status, 422);
    assert!(bad.body.contains("page_token"), "{}", bad.body);
    assert_eq!(outbox(&mut net.desk_as("VN", "police")).await.len(), 501);
    net.stop("VN").await;
}
