//! Issue 5 (revocation and rotation): a revoked desk client and a revoked peer are refused at the
//! handshake after SIGHUP, by the same node process, and nothing queued is lost; a new node
//! certificate is picked up from the file alone; a bad CRL file keeps the previous one.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use hanoi247::domain::access::Role;
use hanoi247::proto::peer_service_client::PeerServiceClient;
use hanoi247::proto::{GetRequest, HelloRequest, ListInboxRequest, Message, MessageState, Precedence};
use hanoi247::trust::tls;

use crate::support::*;

/// Runs the real binary and returns its stdout; it must succeed.
fn hanoi247(args: &[&str], paths: &[&Path]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_hanoi247")).args(args).args(paths).output().unwrap();
    assert!(output.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

/// The TLS alert the desk (or peer) listener on `port` answers a client with these files with.
async fn alert_for(ca: &Path, cert: &Path, key: &Path, port: u16) -> String {
    handshake_alert(tls::client_config(ca, cert, key).unwrap(), port).await
}

async fn desk_works(net: &Network, node: &str, client: &str) -> bool {
    net.desk_as(node, client).list_inbox(ListInboxRequest { limit: 1, ..Default::default() }).await.is_ok()
}

async fn get(desk: &mut hanoi247::cli::desk_client::DeskClient, id: &str) -> Message {
    desk.get(GetRequest { id: id.into() }).await.unwrap().into_inner().message.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_desk_client_is_refused_after_sighup_without_restart() {
    let net =
        Network::with_clients(&["VN", "FR"], &[("VN", "alice", Role::Officer), ("VN", "bob", Role::Officer)])
            .await;
    let vn = net.spawn("VN").await;
    let pid = vn.child.id();
    let node_toml = net.config_path("VN");
    let alice = hanoi247::config::ClientConfig::load(&net.client_config_path_of("VN", "alice")).unwrap();

    // Queued before the revocation: FR is not running, so it waits in VN's outbox.
    let mut alice_desk = net.desk_as("VN", "alice");
    let queued = submit(&mut alice_desk, advice_request("FR", Precedence::Flash, "queued before")).await;

    let out = hanoi247(&["certs", "revoke", "--config"], &[&node_toml, Path::new("--cert"), &alice.cert]);
    assert!(out.contains("revoked serial"), "{out}");
    vn.hangup();

    // Refused at the handshake, on a new connection ...
    eventually("alice is refused", || async { !desk_works(&net, "VN", "alice").await }).await;
    let alert = alert_for(&alice.ca, &alice.cert, &alice.key, alice_port(&alice)).await;
    assert!(alert.contains("CertificateRevoked"), "{alert}");
    // ... and on the connection she had open: the reload closed it.
    assert!(alice_desk.list_inbox(ListInboxRequest::default()).await.is_err());
    assert!(net.log_of("VN").contains("closing a connection whose certificate is no longer accepted"));
    assert!(net.log_of("VN").contains("SIGHUP"), "the reload was the SIGHUP's");

    // Bob still works, the node is the same process, the queued message is still there.
    assert!(desk_works(&net, "VN", "bob").await);
    let mut bob = net.desk_as("VN", "bob");
    let message = get(&mut bob, &queued).await;
    assert!(
        matches!(message.state(), MessageState::Queued | MessageState::WaitingRetry),
        "{:?}",
        message.state()
    );
    assert_eq!(vn.child.id(), pid);
    let mut vn = vn;
    assert!(vn.child.try_wait().unwrap().is_none(), "VN never restarted");

    // Revoking again changes nothing.
    let out = hanoi247(&["certs", "revoke", "--config"], &[&node_toml, Path::new("--cert"), &alice.cert]);
    assert!(out.contains("already revoked"), "{out}");
}

fn alice_port(client: &hanoi247::config::ClientConfig) -> u16 {
    client.endpoint.rsplit_once(':').unwrap().1.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_peer_is_refused_and_its_queue_waits_for_its_new_certificate() {
    let net = Network::new(&["VN", "FR"]).await;
    let vn = net.spawn("VN").await;
    let fr = net.spawn("FR").await;
    let (vn_pid, fr_pid) = (vn.child.id(), fr.child.id());
    let mut fr_desk = net.desk("FR");
    let mut vn_desk = net.desk("VN");

    // FR delivers to VN and VN to FR: both connections are open from now on.
    let before = submit(&mut fr_desk, advice_request("VN", Precedence::Flash, "before")).await;
    wait_state(&mut fr_desk, &before, MessageState::Delivered).await;
    let vn_before = submit(&mut vn_desk, advice_request("FR", Precedence::Flash, "vn before")).await;
    wait_state(&mut vn_desk, &vn_before, MessageState::Delivered).await;

    let fr_config = net.config("FR");
    let out = hanoi247(
        &["certs", "revoke", "--config"],
        &[&net.config_path("VN"), Path::new("--cert"), &fr_config.tls.cert],
    );
    assert!(out.contains("revoked serial"), "{out}");
    vn.hangup();
    let vn_peer_port = net.config("VN").listen.peer.port();
    eventually("VN reloads", || async { net.log_of("VN").contains("TLS material reloaded") }).await;
    let alert =
        alert_for(&fr_config.tls.network_ca, &fr_config.tls.cert, &fr_config.tls.key, vn_peer_port).await;
    assert!(alert.contains("CertificateRevoked"), "{alert}");

    // VN's own open connection to FR does not outlive the reload: its next request to FR waits,
    // refused at the new handshake, and FR never gets it.
    eventually("VN's delivery reconnects", || async {
        net.log_of("VN").contains("delivery reconnects to every peer")
    })
    .await;
    let vn_after = submit(&mut vn_desk, advice_request("FR", Precedence::Flash, "vn after")).await;
    eventually("VN's request to the revoked FR waits", || {
        let mut desk = vn_desk.clone();
        let vn_after = vn_after.clone();
        async move {
            let message = get(&mut desk, &vn_after).await;
            message.state() == MessageState::WaitingRetry && message.last_error.contains("Revoked")
        }
    })
    .await;
    assert!(!ids(&inbox(&mut fr_desk).await).contains(&vn_after), "FR did not get it");

    // New outgoing connections with VN's files refuse FR's server certificate as well.
    let vn_tls = tls::NodeTls::load(&net.config("VN").tls).unwrap();
    let dial = tls::Dial {
        endpoint: format!("127.0.0.1:{}", fr_config.listen.peer.port()),
        expect: None,
        connect_timeout: Duration::from_secs(5),
        request_timeout: Some(Duration::from_secs(10)),
        observe: None,
    };
    let mut to_fr = PeerServiceClient::new(tls::channel(dial, vn_tls.client_config()).unwrap());
    let refused = to_fr.hello(HelloRequest::default()).await.unwrap_err();
    let refused = hanoi247::peer::delivery::describe(&refused);
    assert!(refused.contains("Revoked"), "{refused}");

    // FR's next request is not delivered (its open connection was closed, new ones are
    // refused), and not lost: it waits in FR's outbox with the refusal as its last error.
    let after = submit(&mut fr_desk, advice_request("VN", Precedence::Flash, "after")).await;
    eventually("FR's request waits, refused at the handshake", || {
        let mut desk = fr_desk.clone();
        let after = after.clone();
        async move {
            let message = get(&mut desk, &after).await;
            message.state() == MessageState::WaitingRetry && message.last_error.contains("CertificateRevoked")
        }
    })
    .await;
    assert!(!ids(&inbox(&mut vn_desk).await).contains(&after), "VN did not store it");
    assert!(
        net.log_of("VN").contains("closing a connection whose certificate is no longer accepted"),
        "FR's open connection was closed by the reload"
    );

    // Rotation: a new certificate for FR from the network CA, staged and pinned as FR's next one
    // (tests/it/rotation.rs checks that nothing is refused on the way); once activated, FR reads
    // it from the file alone (no SIGHUP) and its queue drains to VN.
    let out = hanoi247(&["certs", "issue", "--node", "--config"], &[&net.config_path("FR")]);
    assert!(out.contains("issued serial"), "{out}");
    let out = hanoi247(&["certs", "activate", "--config"], &[&net.config_path("FR")]);
    assert!(out.contains("in use now: serial"), "{out}");
    wait_state(&mut fr_desk, &after, MessageState::Delivered).await;
    assert!(ids(&inbox(&mut vn_desk).await).contains(&after));
    assert!(
        net.log_of("FR").lines().any(|l| l.contains("reloading") && l.contains("changed:")),
        "FR reloaded by itself, on the file change"
    );
    assert_eq!((vn.child.id(), fr.child.id()), (vn_pid, fr_pid));
    let (mut vn, mut fr) = (vn, fr);
    assert!(vn.child.try_wait().unwrap().is_none() && fr.child.try_wait().unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_crl_file_keeps_the_previous_one() {
    let net =
        Network::with_clients(&["VN"], &[("VN", "alice", Role::Officer), ("VN", "bob", Role::Officer)]).await;
    let vn = net.spawn("VN").await;
    let node_toml = net.config_path("VN");
    let config = net.config("VN");
    let crl = config.tls.client_crl.clone().expect("init names the client CRL");
    let alice = hanoi247::config::ClientConfig::load(&net.client_config_path_of("VN", "alice")).unwrap();
    hanoi247(&["certs", "revoke", "--config"], &[&node_toml, Path::new("--cert"), &alice.cert]);
    vn.hangup();
    eventually("alice is refused", || async { !desk_works(&net, "VN", "alice").await }).await;

    // Junk, then a CRL of another CA (the network CA's): each reload fails and says so, and the
    // CRL that revokes alice stays in force.
    let network_crl = config.tls.peer_crl.clone().unwrap();
    let bad_files = [
        (b"not a CRL".to_vec(), "no CRL in file"),
        (std::fs::read(&network_crl).unwrap(), "not signed by a CA"),
    ];
    for (bad, error) in bad_files {
        std::fs::write(&crl, bad).unwrap();
        vn.hangup();
        eventually(error, || async {
            net.log_of("VN").lines().any(|l| l.contains("TLS reload failed") && l.contains(error))
        })
        .await;
        let alert = alert_for(&alice.ca, &alice.cert, &alice.key, alice_port(&alice)).await;
        assert!(alert.contains("CertificateRevoked"), "{alert}");
        assert!(desk_works(&net, "VN", "bob").await);
    }
}

/// Runs the real binary, which must fail; returns its stderr.
fn hanoi247_fails(args: &[&str], paths: &[&Path]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_hanoi247")).args(args).args(paths).output().unwrap();
    assert!(!output.status.success(), "{args:?} succeeded");
    String::from_utf8(output.stderr).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certs_commands_refuse_bad_input_and_change_no_crl() {
    let net = Network::new(&["VN", "FR"]).await;
    let node_toml = net.config_path("VN");
    let config = net.config("VN");
    let (peer_crl, client_crl) =
        (config.tls.peer_crl.clone().unwrap(), config.tls.client_crl.clone().unwrap());
    let crls = || (std::fs::read(&peer_crl).unwrap(), std::fs::read(&client_crl).unwrap());
    let before = crls();

    // FR's officer was issued by FR's local CA: not VN's to revoke.
    let fr_officer = hanoi247::config::ClientConfig::load(&net.client_config_path("FR")).unwrap();
    let err = hanoi247_fails(
        &["certs", "revoke", "--config"],
        &[&node_toml, Path::new("--cert"), &fr_officer.cert],
    );
    assert!(err.contains("neither by the network CA nor by the local CA"), "{err}");
    let err =
        hanoi247_fails(&["certs", "revoke", "--serial", "xyz", "--ca", "local", "--config"], &[&node_toml]);
    assert!(err.contains("--serial xyz"), "{err}");
    let err = hanoi247_fails(&["certs", "revoke", "--serial", "0A", "--config"], &[&node_toml]);
    assert!(err.contains("--ca"), "{err}");
    let err = hanoi247_fails(&["certs", "issue", "--config"], &[&node_toml]);
    assert!(err.contains("--node") && err.contains("--client"), "{err}");
    let err = hanoi247_fails(&["certs", "issue", "--client", "Not A Name", "--config"], &[&node_toml]);
    assert!(err.contains("Not A Name"), "{err}");
    // A client named like one of the node's own files would overwrite them.
    let desk_cert = std::fs::read(&config.tls.desk_cert).unwrap();
    let err = hanoi247_fails(&["certs", "issue", "--client", "desk", "--config"], &[&node_toml]);
    assert!(err.contains("client name 'desk' is taken"), "{err}");
    assert_eq!(std::fs::read(&config.tls.desk_cert).unwrap(), desk_cert, "the desk certificate is untouched");
    assert_eq!(crls(), before);

    // Without tls.client_crl there is no list to add to: the error names the key.
    net.edit_config("VN", "client_crl = \"local-ca.crl\"\n", "");
    let officer = hanoi247::config::ClientConfig::load(&net.client_config_path("VN")).unwrap();
    let err =
        hanoi247_fails(&["certs", "revoke", "--config"], &[&node_toml, Path::new("--cert"), &officer.cert]);
    assert!(err.contains("tls.client_crl is not set"), "{err}");
    assert_eq!(crls(), before);

    // A new client gets its files and the reminder to bind it to a role.
    let out = hanoi247(&["certs", "issue", "--client", "carol", "--config"], &[&node_toml]);
    assert!(out.contains("issued serial") && out.contains("[[clients]]"), "{out}");
    let carol = hanoi247::config::ClientConfig::load(&node_toml.with_file_name("carol.client.toml")).unwrap();
    assert_eq!(carol.ca, config.tls.local_ca);
    let identity =
        hanoi247::domain::identity::identity_of_cert(&tls::load_certs(&carol.cert).unwrap()[0]).unwrap();
    assert_eq!(identity.to_string(), format!("spiffe://{}/node/VN/client/carol", net.network));
}
