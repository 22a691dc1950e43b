//! Issue 20 (rotation with overlap): a node certificate is rotated through the RUNBOOK's steps
//! (issue → directory with the next pin → activate → directory with only the new pin) while
//! FLASH requests flow both ways, and no connection is refused and no delivery fails; a desk
//! client's certificate is rotated under a running `watch`; a client added to `[[clients]]`
//! works after a reload without a restart, and a removed one's connections are closed; a pin
//! that is neither current nor next is refused, naming both.

use std::io::{BufRead as _, Read as _, Write as _};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hanoi247::cli::certs::{self, Authority, RevokeTarget};
use hanoi247::domain::access::Role;
use hanoi247::proto::peer_service_client::PeerServiceClient;
use hanoi247::proto::{
    GetRequest, HelloRequest, ListInboxRequest, ListPeersRequest, Message, MessageState, Precedence,
    WatchRequest,
};
use hanoi247::trust::directory::{fingerprint, fingerprint_of_file};
use hanoi247::trust::tls;

use crate::support::*;

/// FLASH requests each sender sends at most (every 100 ms): bounds the test's length.
const MAX_PER_SENDER: usize = 300;

/// Every node reads its directory and files again every 200 ms (the default is 2 s).
fn fast_polling(net: &Network, nodes: &[&str]) {
    for node in nodes {
        net.edit_config(node, "poll_interval = \"2s\"", "poll_interval = \"200ms\"");
    }
}

/// The directory version `node` uses.
async fn directory_version(net: &Network, node: &str) -> u64 {
    net.desk_as(node, "operator")
        .list_peers(ListPeersRequest {})
        .await
        .unwrap()
        .into_inner()
        .directory_version
}

async fn all_use_version(net: &Network, nodes: &[&str], version: u64) {
    for node in nodes {
        eventually(&format!("{node} uses directory version {version}"), async || {
            directory_version(net, node).await == version
        })
        .await;
    }
}

/// The SHA-256 of the certificate `to`'s peer listener presents to `from` in a `Hello` (a whole
/// call: a connection dropped right after its handshake would count as refused).
async fn presented_pin(net: &Network, from: &str, to: &str) -> String {
    let seen = Arc::new(std::sync::Mutex::new(String::new()));
    let observed = Arc::clone(&seen);
    let dial = tls::Dial {
        endpoint: format!("127.0.0.1:{}", net.config(to).listen.peer.port()),
        expect: None,
        connect_timeout: Duration::from_secs(5),
        request_timeout: Some(Duration::from_secs(10)),
        observe: Some(Arc::new(move |cert| *observed.lock().unwrap() = fingerprint(cert.as_ref()))),
    };
    let config = tls::NodeTls::load(&net.config(from).tls).unwrap().client_config();
    let mut peer = PeerServiceClient::new(tls::channel(dial, config).unwrap());
    peer.hello(HelloRequest::default()).await.unwrap();
    seen.lock().unwrap().clone()
}

/// The samples of `name` on a node's `/metrics`.
fn metric_lines(net: &Network, node: &str, name: &str) -> Vec<String> {
    let port = net.config(node).metrics.listen.port();
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).unwrap();
    body.lines().filter(|line| line.starts_with(name)).map(str::to_owned).collect()
}

/// The sum of every sample of `name` on a node's `/metrics`.
fn metric_sum(net: &Network, node: &str, name: &str) -> f64 {
    metric_lines(net, node, name)
        .iter()
        .filter_map(|line| line.rsplit_once(' ').and_then(|(_, value)| value.parse::<f64>().ok()))
        .sum()
}

/// Sends a FLASH request from `from` to `to` every 100 ms until `stop` (or the bound); returns
/// the ids the node confirmed as stored.
fn send_every_100ms(
    net: &Network,
    from: &str,
    to: &str,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<String>> {
    let mut desk = net.desk(from);
    let (from, to) = (from.to_owned(), to.to_owned());
    tokio::spawn(async move {
        let mut ids = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        while !stop.load(Ordering::SeqCst) && ids.len() < MAX_PER_SENDER {
            tick.tick().await;
            let subject = format!("{from} to {to} #{}", ids.len());
            ids.push(submit(&mut desk, advice_request(&to, Precedence::Flash, &subject)).await);
        }
        ids
    })
}

/// Every message in `ids` reaches DELIVERED at `node` without one failed attempt (so none waited
/// for a retry it was not already in), within `bound` of being queued.
async fn delivered_at_first_attempt(net: &Network, node: &str, ids: &[String], bound: Duration) {
    let mut desk = net.desk(node);
    for id in ids {
        let message = wait_state(&mut desk, id, MessageState::Delivered).await;
        assert_eq!(
            (message.attempts, message.last_error.as_str()),
            (0, ""),
            "{node}: {id} failed on the way: {:?}",
            message.timeline
        );
        let at = |state: MessageState| {
            let entry = message.timeline.iter().find(|e| e.state() == state).unwrap();
            let at = entry.at.unwrap();
            Duration::from_secs(at.seconds as u64) + Duration::from_nanos(at.nanos as u64)
        };
        let took = at(MessageState::Delivered).saturating_sub(at(MessageState::Queued));
        assert!(took <= bound, "{node}: {id} took {took:?} to be delivered (bound {bound:?})");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_certificate_rotated_under_traffic_refuses_no_connection_and_fails_no_delivery() {
    let nodes = ["VN", "DE", "FR"];
    let mut net = Network::new(&nodes).await;
    fast_polling(&net, &nodes);
    for node in nodes {
        net.start(node).await;
    }
    let fr_toml = net.config_path("FR");
    let old_pin = fingerprint_of_file(&net.config("FR").tls.cert).unwrap();
    let start_version = directory_version(&net, "VN").await;

    let stop = Arc::new(AtomicBool::new(false));
    let senders = [("VN", "FR"), ("DE", "FR"), ("FR", "VN"), ("FR", "DE")]
        .map(|(from, to)| (from, send_every_100ms(&net, from, to, Arc::clone(&stop))));

    // 1. A new certificate, staged; the directory pins it as FR's next one beside the current.
    let issued = certs::issue_node(&fr_toml, &[], 30).unwrap();
    assert_eq!(issued.previous.as_ref().map(|(_, sha)| sha.as_str()), Some(old_pin.as_str()));
    assert_ne!(issued.sha256, old_pin);
    assert_eq!(fingerprint_of_file(&net.config("FR").tls.cert).unwrap(), old_pin, "node.pem is untouched");
    // 2. Every member installs that directory (here: the shared file, polled).
    all_use_version(&net, &nodes, start_version + 1).await;
    // 3. FR switches to the new certificate (the file, read by itself).
    let activated = certs::activate_node(&fr_toml).unwrap();
    assert_eq!(activated.sha256, issued.sha256);
    assert!(fr_toml.with_file_name("node.previous.pem").exists());
    for peer in ["VN", "DE"] {
        eventually("FR presents its new certificate", async || {
            presented_pin(&net, peer, "FR").await == issued.sha256
        })
        .await;
    }
    // 4. The directory with only the new pin.
    net.edit_shared_directory(|directory| {
        directory.promote_next_pin(code("FR")).unwrap();
    });
    all_use_version(&net, &nodes, start_version + 2).await;
    // A few more rounds on the final directory, then stop.
    let mut vn_desk = net.desk("VN");
    let last = submit(&mut vn_desk, advice_request("FR", Precedence::Flash, "after the rotation")).await;
    wait_state(&mut vn_desk, &last, MessageState::Delivered).await;
    stop.store(true, Ordering::SeqCst);

    let mut sent = 0;
    for (from, sender) in senders {
        let ids = sender.await.unwrap();
        assert!(ids.len() < MAX_PER_SENDER, "{from} hit the bound before the rotation ended");
        sent += ids.len();
        delivered_at_first_attempt(&net, from, &ids, Duration::from_secs(5)).await;
    }
    assert!(sent >= 8, "only {sent} requests were sent during the rotation");
    // Not `hanoi247_connections_refused_total`: a delivery task restarted for a new directory
    // entry abandons a handshake under way, which the listener counts as refused ("connection
    // reset by peer"). A refusal for identity, in either direction, fails the call it was for:
    // a failed attempt above, or the peer board's error below.
    for node in nodes {
        let peers = net.desk_as(node, "operator").list_peers(ListPeersRequest {}).await.unwrap().into_inner();
        for peer in peers.peers {
            // A "connection refused" from before every node had started may remain; no refusal
            // for identity may appear.
            let error = peer.last_error.to_lowercase();
            for word in ["certificate", "pins", "directory", "permission"] {
                assert!(!error.contains(word), "{node} about {}: {}", peer.peer, peer.last_error);
            }
        }
    }
    assert_eq!(presented_pin(&net, "DE", "FR").await, issued.sha256);
    for node in nodes {
        net.stop(node).await;
    }
}

/// Reads `watch --json` lines from `stdout` on a thread; sends each event's sequence number and
/// message id.
fn read_events(stdout: std::process::ChildStdout) -> tokio::sync::mpsc::UnboundedReceiver<(u64, String)> {
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let event: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if let (Some(sequence), Some(id)) = (event["sequence"].as_u64(), event["message_id"].as_str()) {
                let _ = sender.send((sequence, id.to_owned()));
            }
        }
    });
    receiver
}

/// The sequence of the first event the watch prints about message `id`, within the deadline.
async fn event_about(watched: &mut tokio::sync::mpsc::UnboundedReceiver<(u64, String)>, id: &str) -> u64 {
    tokio::time::timeout(DEADLINE, async {
        loop {
            let (sequence, about) = watched.recv().await.expect("watch runs");
            if about == id {
                return sequence;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the watch prints an event about {id}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_desk_clients_certificate_rotated_under_a_running_watch_keeps_it_watching() {
    let mut net = Network::with_clients(
        &["VN", "FR"],
        &[("FR", "alice", Role::Officer), ("FR", "bob", Role::Officer), ("FR", "operator", Role::Operator)],
    )
    .await;
    fast_polling(&net, &["VN", "FR"]);
    net.start("VN").await;
    net.start("FR").await;
    let fr_toml = net.config_path("FR");
    let alice = net.client_config_path_of("FR", "alice");
    let mut watch = std::process::Command::new(env!("CARGO_BIN_EXE_hanoi247"))
        // From the first event: the watch may connect after the first submission.
        .args(["watch", "--json", "--after", "0", "--config"])
        .arg(&alice)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut watched = read_events(watch.stdout.take().unwrap());
    let mut bob = net.desk_as("FR", "bob");
    let mut events = Vec::new();
    let mut submit_and_see = async |subject: &str, events: &mut Vec<u64>| {
        let id = submit(&mut bob, advice_request("VN", Precedence::Flash, subject)).await;
        events.push(event_about(&mut watched, &id).await);
    };
    submit_and_see("before", &mut events).await;

    // alice's certificate is rotated: new PEM files and .p12, the previous pair kept.
    let old_cert = std::fs::read(alice.with_file_name("alice.pem")).unwrap();
    let issued = certs::issue_client(&fr_toml, "alice", 30).unwrap();
    let (old_serial, _) = issued.previous.clone().expect("alice had a certificate");
    assert_eq!(std::fs::read(alice.with_file_name("alice.previous.pem")).unwrap(), old_cert);
    // The browser's .p12 holds the new certificate, under its new password.
    let password = std::fs::read_to_string(alice.with_file_name("alice.p12.password")).unwrap();
    let p12 = std::fs::read(alice.with_file_name("alice.p12")).unwrap();
    let store = p12_keystore::KeyStore::from_pkcs12(
        &p12,
        password.trim_end(),
        p12_keystore::Pkcs12ImportPolicy::Strict,
    )
    .unwrap();
    let (_, chain) = store.private_key_chain().expect("the key with its certificates");
    assert_eq!(fingerprint(chain.certs()[0].as_der()), issued.sha256);
    submit_and_see("after the new files", &mut events).await;

    // The previous certificate is revoked: FR closes the watch's connection, which comes back
    // with the new certificate, and nothing in between is missed.
    let serial = hanoi247::trust::pki::parse_serial(&old_serial).unwrap();
    certs::revoke(&fr_toml, &RevokeTarget::Serial(serial, Authority::Local)).unwrap();
    let mut old_only = hanoi247::config::ClientConfig::load(&alice).unwrap();
    old_only.cert = alice.with_file_name("alice.previous.pem");
    old_only.key = alice.with_file_name("alice.previous.key");
    eventually("FR refuses alice's previous certificate", async || {
        let mut desk = hanoi247::cli::desk_client::connect(&old_only).unwrap();
        let call = desk.list_inbox(ListInboxRequest { limit: 1, ..Default::default() }).await;
        call.is_err_and(|status| format!("{status:?}").contains("Revoked"))
    })
    .await;
    let refused_before = metric_sum(&net, "FR", "hanoi247_connections_refused_total");
    assert!(refused_before > 0.0, "the refused handshake above is counted under this name");
    submit_and_see("after the revocation", &mut events).await;
    submit_and_see("later", &mut events).await;
    assert!(events.windows(2).all(|w| w[1] > w[0]), "{events:?}");

    let _ = watch.kill();
    let _ = watch.wait();
    let mut stderr = String::new();
    watch.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(stderr.contains("reconnecting"), "the revocation closed the watch's connection: {stderr}");
    assert_eq!(
        metric_sum(&net, "FR", "hanoi247_connections_refused_total"),
        refused_before,
        "the watch reconnected with the new certificate, not refused: {stderr}"
    );
    assert!(!stderr.to_lowercase().contains("revoked"), "{stderr}");
    net.stop("FR").await;
    net.stop("VN").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_added_by_reload_works_without_a_restart_and_a_removed_ones_connections_close() {
    let mut net = Network::new(&["FR"]).await;
    fast_polling(&net, &["FR"]);
    net.start("FR").await;
    let fr_toml = net.config_path("FR");
    let issued = certs::issue_client(&fr_toml, "carol", 30).unwrap();
    assert!(issued.note.as_deref().unwrap_or_default().contains("no restart needed"), "{:?}", issued.note);
    let carol_config =
        hanoi247::config::ClientConfig::load(&fr_toml.with_file_name("carol.client.toml")).unwrap();
    let mut carol = hanoi247::cli::desk_client::connect(&carol_config).unwrap();
    let refused = carol.list_inbox(ListInboxRequest { limit: 1, ..Default::default() }).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert!(
        refused.message().contains("add it under [[clients]]") && refused.message().contains("reload"),
        "{}",
        refused.message()
    );

    // Added under [[clients]]: the node reads it again (here on the file change; SIGHUP too).
    let mut text = std::fs::read_to_string(&fr_toml).unwrap();
    text.push_str("\n[[clients]]\nname = \"carol\"\nrole = \"officer\"\n");
    std::fs::write(&fr_toml, &text).unwrap();
    eventually("carol is let in without a restart", async || {
        carol.list_inbox(ListInboxRequest { limit: 1, ..Default::default() }).await.is_ok()
    })
    .await;
    let mut stream = carol.watch(WatchRequest { after_sequence: None }).await.unwrap().into_inner();

    // Removed: its open stream is cut and every new call refused.
    std::fs::write(&fr_toml, text.replace("\n[[clients]]\nname = \"carol\"\nrole = \"officer\"\n", "\n"))
        .unwrap();
    let ended = tokio::time::timeout(DEADLINE, async {
        loop {
            match tokio_stream::StreamExt::next(&mut stream).await {
                Some(Ok(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the removed client's watch is cut");
    assert!(matches!(ended, None | Some(Err(_))), "{ended:?}");
    let refused = hanoi247::cli::desk_client::connect(&carol_config)
        .unwrap()
        .list_inbox(ListInboxRequest { limit: 1, ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    // The officer kept working throughout.
    net.desk("FR").list_inbox(ListInboxRequest { limit: 1, ..Default::default() }).await.unwrap();
    net.stop("FR").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_that_is_neither_the_current_nor_the_next_pin_is_refused_naming_both() {
    let mut net = Network::new(&["VN", "FR"]).await;
    let (current, next) = (fingerprint(b"current certificate"), fingerprint(b"next certificate"));
    for (node, peer) in [("FR", "VN"), ("VN", "FR")] {
        net.edit_directory(node, |directory| {
            let member = directory.members.iter_mut().find(|m| m.code == code(peer)).unwrap();
            member.certificate_sha256 = current.clone();
            member.next_certificate_sha256 = next.clone();
        });
    }
    net.start("FR").await;
    // FR, called by VN: refused, both pins named.
    let status = net.peer_client("VN", "FR").hello(HelloRequest::default()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    let both = format!("current {current} or next {next}");
    assert!(status.message().contains(&both), "{}", status.message());

    // VN, calling FR: the connection fails, naming both pins; FR gets nothing.
    net.start("VN").await;
    let mut vn_desk = net.desk("VN");
    let id = submit(&mut vn_desk, preservation_request("FR")).await;
    eventually("VN refuses FR's certificate", async || {
        let got: Message =
            vn_desk.get(GetRequest { id: id.clone() }).await.unwrap().into_inner().message.unwrap();
        got.last_error.contains("the directory pins") && got.last_error.contains(&both)
    })
    .await;
    assert!(inbox(&mut net.desk("FR")).await.is_empty(), "nothing reached FR");
    net.stop("VN").await;
    net.stop("FR").await;
}

/// `certs activate` without a staged certificate says what to run first; the node's files are
/// untouched.
#[test]
fn activating_without_a_staged_certificate_is_refused_and_changes_nothing() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let net = runtime.block_on(Network::new(&["FR"]));
    let fr_toml = net.config_path("FR");
    let before = std::fs::read(net.config("FR").tls.cert).unwrap();
    let err = certs::activate_node(&fr_toml).unwrap_err().to_string();
    assert!(err.contains("node.next.pem") && err.contains("certs issue"), "{err}");
    assert_eq!(std::fs::read(net.config("FR").tls.cert).unwrap(), before);
    assert!(!Path::new(&fr_toml.with_file_name("node.previous.pem")).exists());
}

/// Hello to `to` presenting the certificate and key in `cert` / `key`, trusting `ca`.
async fn hello_with(
    net: &Network,
    ca: &Path,
    cert: &Path,
    key: &Path,
    to: &str,
) -> Result<(), tonic::Status> {
    let dial = tls::Dial {
        endpoint: format!("127.0.0.1:{}", net.config(to).listen.peer.port()),
        expect: None,
        connect_timeout: Duration::from_secs(5),
        request_timeout: Some(Duration::from_secs(10)),
        observe: None,
    };
    let config = tls::client_config(ca, cert, key).unwrap();
    PeerServiceClient::new(tls::channel(dial, config).unwrap())
        .hello(HelloRequest::default())
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_ca_bundle_accepts_certificates_of_the_old_and_the_new_ca_during_the_change() {
    use hanoi247::trust::pki::{self, CertificateAuthority, RevocationList};
    let mut net = Network::new(&["VN", "FR"]).await;
    fast_polling(&net, &["VN", "FR"]);
    net.start("VN").await;
    net.start("FR").await;
    let (vn, fr, fr_toml) = (net.config("VN"), net.config("FR"), net.config_path("FR"));
    let same = |a: &Path, b: &Path| a.canonicalize().unwrap() == b.canonicalize().unwrap();
    assert!(same(&vn.tls.network_ca, &fr.tls.network_ca), "init shares one network CA file");

    // FR's next certificate comes from a new network CA, staged beside its current one.
    let new_ca = CertificateAuthority::generate("hanoi247 network CA 2027", 30).unwrap();
    let hosts: Vec<String> = ["localhost", "127.0.0.1", "::1"].map(String::from).to_vec();
    let next = new_ca.issue_node(&net.network, code("FR"), &hosts, 30).unwrap();
    let (next_cert, next_key) = (certs::beside(&fr.tls.cert, "next"), certs::beside(&fr.tls.key, "next"));
    pki::write_private_key(&next_key, &next.key_pem).unwrap();
    pki::write_certificate(&next_cert, &next.cert_pem).unwrap();
    net.edit_shared_directory(|directory| {
        directory.set_next_pin(code("FR"), &fingerprint_of_file(&next_cert).unwrap()).unwrap();
    });
    let bundle = fr.tls.network_ca.with_file_name("bundle.pem");
    let old_ca = std::fs::read_to_string(&fr.tls.network_ca).unwrap();
    std::fs::write(&bundle, format!("{old_ca}{}", new_ca.cert_pem())).unwrap();
    // Before the bundle is installed, VN refuses the new CA's certificate (pinned or not).
    let new_ca_client = tls::client_config(&bundle, &next_cert, &next_key).unwrap();
    let refused = handshake_alert(new_ca_client, vn.listen.peer.port()).await;
    assert!(refused.contains("UnknownCA"), "{refused}");

    // Every member installs the bundle (both CAs) and a CRL of each: the old CA's certificates
    // and the new one's are accepted alike.
    let crl = fr.tls.peer_crl.clone().expect("init names the peer CRL");
    let old_crl = std::fs::read_to_string(&crl).unwrap();
    let new_crl = new_ca.sign_revocation_list(&RevocationList { number: 1, revoked: Vec::new() }).unwrap();
    std::fs::write(&crl, format!("{old_crl}{new_crl}")).unwrap();
    std::fs::copy(&bundle, &fr.tls.network_ca).unwrap();
    eventually("VN accepts FR's certificate from the new CA", async || {
        hello_with(&net, &bundle, &next_cert, &next_key, "VN").await.is_ok()
    })
    .await;
    hello_with(&net, &bundle, &vn.tls.cert, &vn.tls.key, "FR").await.unwrap();

    // FR switches to its new-CA certificate; VN (old CA) and FR (new CA) deliver both ways.
    certs::activate_node(&fr_toml).unwrap();
    eventually("FR presents its new-CA certificate", async || {
        presented_pin(&net, "VN", "FR").await == fingerprint_of_file(&fr.tls.cert).unwrap()
    })
    .await;
    let to_fr = submit(&mut net.desk("VN"), advice_request("FR", Precedence::Flash, "old CA to new")).await;
    let to_vn = submit(&mut net.desk("FR"), advice_request("VN", Precedence::Flash, "new CA to old")).await;
    delivered_at_first_attempt(&net, "VN", &[to_fr], Duration::from_secs(5)).await;
    delivered_at_first_attempt(&net, "FR", &[to_vn], Duration::from_secs(5)).await;
    net.stop("VN").await;
    net.stop("FR").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_signed_by_the_secretariats_next_key_is_taken_where_that_key_is_configured() {
    let mut net = Network::new(&["VN", "FR"]).await;
    fast_polling(&net, &["VN", "FR"]);
    let dir = tempfile::tempdir().unwrap();
    let next_key = hanoi247::trust::directory::SecretariatKey::create(
        &dir.path().join("next.key"),
        &dir.path().join("next.pub"),
    )
    .unwrap();
    let current = net.secretariat_key().public_key().to_hex();
    net.edit_config(
        "VN",
        &format!("public_key = \"{current}\""),
        &format!("public_key = \"{current}\"\nnext_public_key = \"{}\"", next_key.public_key().to_hex()),
    );
    net.start("VN").await;
    net.start("FR").await;
    let version = directory_version(&net, "VN").await;
    sign_with(&net.shared_directory_path(), &next_key, |_| {});
    all_use_version(&net, &["VN"], version + 1).await;
    // FR was not given the next key: it keeps the version it has.
    let mut vn_desk = net.desk("VN");
    let id = submit(&mut vn_desk, advice_request("FR", Precedence::Flash, "still delivered")).await;
    wait_state(&mut vn_desk, &id, MessageState::Delivered).await;
    assert_eq!(directory_version(&net, "FR").await, version);
    net.stop("VN").await;
    net.stop("FR").await;
}

/// Runs the real binary; returns (success, stdout, stderr).
fn hanoi247(args: &[&str]) -> (bool, String, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_hanoi247")).args(args).output().unwrap();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (output.status.success(), text(&output.stdout), text(&output.stderr))
}

#[test]
fn the_rotation_commands_print_both_certificates_and_refuse_bad_input_changing_nothing() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let net = runtime.block_on(Network::new(&["VN", "FR"]));
    let fr_toml = net.config_path("FR");
    let fr_toml = fr_toml.to_str().unwrap();
    let directory = net.shared_directory_path();
    let file = directory.to_str().unwrap();
    let old_pin = fingerprint_of_file(&net.config("FR").tls.cert).unwrap();

    let (ok, out, err) = hanoi247(&["certs", "issue", "--node", "--config", fr_toml]);
    assert!(ok, "{err}");
    assert!(out.contains("previous certificate: serial") && out.contains(&old_pin), "{out}");
    assert!(
        out.contains("issued serial") && out.contains("node.next.pem") && out.contains("certs activate"),
        "{out}"
    );
    let next_pin = fingerprint_of_file(&net.config("FR").tls.cert.with_file_name("node.next.pem")).unwrap();
    let fr = |d: &hanoi247::trust::directory::Directory| d.member(code("FR")).unwrap().pins();
    assert_eq!(
        fr(&hanoi247::trust::directory::Directory::read(&directory).unwrap()),
        [old_pin.clone(), next_pin.clone()]
    );

    let public = net.dir().join("net/secretariat.pub");
    let (ok, out, err) =
        hanoi247(&["directory", "verify", "--file", file, "--public-key", public.to_str().unwrap()]);
    assert!(ok && out.contains(&format!("next certificate SHA-256 {}", &next_pin[..16])), "{out}{err}");

    // Bad input: named, and the directory file is left as it was.
    let before = std::fs::read(&directory).unwrap();
    for (args, named) in [
        (vec!["--code", "XX", "--finish"], "XX is not a member"),
        (vec!["--code", "VN", "--finish"], "VN has no next pin"),
        (vec!["--code", "FR", "--next-cert", "/nonexistent.pem"], "/nonexistent.pem"),
    ] {
        let mut all = vec!["directory", "rotate", "--file", file];
        all.extend(args);
        let (ok, _, err) = hanoi247(&all);
        assert!(!ok && err.contains(named), "{all:?}: {err}");
        assert_eq!(std::fs::read(&directory).unwrap(), before, "{all:?} changed the directory");
    }
    let (ok, _, err) = hanoi247(&["directory", "rotate", "--file", file, "--code", "FR"]);
    assert!(!ok && err.contains("--next-cert"), "{err}");

    let (ok, out, err) = hanoi247(&["certs", "activate", "--config", fr_toml]);
    assert!(ok, "{err}");
    assert!(
        out.contains("in use now: serial") && out.contains(&next_pin) && out.contains("--finish"),
        "{out}"
    );
    let (ok, out, err) = hanoi247(&["directory", "rotate", "--file", file, "--code", "FR", "--finish"]);
    assert!(ok && out.contains(&format!("FR pins only {next_pin}")), "{out}{err}");
    let (ok, _, err) = hanoi247(&[
        "directory",
        "sign",
        "--file",
        file,
        "--key",
        net.dir().join("net/secretariat.key").to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert_eq!(fr(&hanoi247::trust::directory::Directory::read(&directory).unwrap()), [next_pin]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_added_under_clients_works_after_sighup_in_the_same_process() {
    let net = Network::new(&["FR"]).await;
    // Only SIGHUP reloads here: files are not looked at again within the test.
    net.edit_config("FR", "poll_interval = \"2s\"", "poll_interval = \"1h\"");
    let mut fr = net.spawn("FR").await;
    let fr_toml = net.config_path("FR");
    certs::issue_client(&fr_toml, "dave", 30).unwrap();
    let dave = hanoi247::config::ClientConfig::load(&fr_toml.with_file_name("dave.client.toml")).unwrap();
    let mut desk = hanoi247::cli::desk_client::connect(&dave).unwrap();
    let list = ListInboxRequest { limit: 1, ..Default::default() };
    let refused = desk.list_inbox(list.clone()).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");

    let mut text = std::fs::read_to_string(&fr_toml).unwrap();
    text.push_str("\n[[clients]]\nname = \"dave\"\nrole = \"operator\"\n");
    std::fs::write(&fr_toml, text).unwrap();
    // Still refused until the reload: the file alone is not read again here.
    assert_eq!(desk.list_inbox(list.clone()).await.unwrap_err().code(), tonic::Code::PermissionDenied);
    fr.hangup();
    eventually("FR logs the reload of [[clients]]", async || {
        net.log_of("FR").contains("[[clients]] reloaded")
    })
    .await;
    desk.list_inbox(list).await.unwrap();
    assert!(fr.child.try_wait().unwrap().is_none(), "the same process, not restarted");
}
