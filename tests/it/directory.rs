//! Issue 7: the signed directory. A node starts only on a directory the secretariat signed,
//! refuses a forged or older one while it runs (keeping the one in use), talks only to the
//! members it lists (with their pinned certificate), and takes a newer directory without a
//! restart, on SIGHUP and when the file changes. `Hello` carries the directory version.

use std::process::{Command, Stdio};

use hanoi247::proto::{GetQueueRequest, HelloRequest, ListPeersRequest, MessageState};
use hanoi247::trust::directory::Directory;

use crate::support::*;

/// The shared directory with its version changed but its old signature kept: a forgery.
fn forge_shared_directory(net: &Network, change: impl FnOnce(&mut Directory)) {
    let path = net.shared_directory_path();
    let mut directory = Directory::read(&path).unwrap();
    change(&mut directory);
    directory.version += 1;
    directory.write(&path).unwrap();
}

/// The directory version `node`'s operator sees, and the peers it lists.
async fn directory_view(net: &Network, node: &str) -> (u64, Vec<String>) {
    let peers = net.desk_as(node, "operator").list_peers(ListPeersRequest {}).await.unwrap().into_inner();
    (peers.directory_version, peers.peers.iter().map(|p| p.peer.clone()).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_directory_is_refused_at_start_and_on_reload_and_the_old_one_stays() {
    let net = Network::new(&["VN", "FR"]).await;
    // Polling would find the change too; this test is about what a reload does, on SIGHUP.
    net.edit_config("VN", "poll_interval = \"2s\"", "poll_interval = \"1h\"");
    let vn = net.spawn("VN").await;
    assert_eq!(directory_view(&net, "VN").await, (1, vec!["FR".to_owned()]));

    forge_shared_directory(&net, |directory| directory.members.retain(|m| m.code != code("FR")));
    vn.hangup();
    eventually("VN logs that it refused the directory", async || {
        net.log_of("VN").contains("directory refused")
    })
    .await;
    let log = net.log_of("VN");
    assert!(log.contains("ERROR") && log.contains("bad signature"), "{log}");
    assert_eq!(directory_view(&net, "VN").await, (1, vec!["FR".to_owned()]), "the old directory stays");

    // A node does not start on it at all.
    drop(vn);
    let output = tokio::task::spawn_blocking({
        let config = net.config_path("VN");
        move || {
            Command::new(env!("CARGO_BIN_EXE_hanoi247"))
                .args(["node", "--config"])
                .arg(config)
                .stdin(Stdio::null())
                .output()
                .unwrap()
        }
    });
    let output = tokio::time::timeout(DEADLINE, output).await.expect("the node exits").unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("directory") && stderr.contains("bad signature"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_directory_is_refused_and_the_newer_one_stays() {
    let net = Network::new(&["VN", "FR"]).await;
    let older = std::fs::read(net.shared_directory_path()).unwrap();
    assert_eq!(net.edit_shared_directory(|_| {}), 2);
    net.edit_config("VN", "poll_interval = \"2s\"", "poll_interval = \"1h\"");
    let vn = net.spawn("VN").await;
    // Correctly signed, but version 1: a replay of an old directory.
    std::fs::write(net.shared_directory_path(), older).unwrap();
    vn.hangup();
    eventually("VN refuses version 1", async || net.log_of("VN").contains("directory refused")).await;
    assert!(net.log_of("VN").contains("version 1 is not newer than version 2"), "{}", net.log_of("VN"));
    assert_eq!(directory_view(&net, "VN").await.0, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_missing_from_the_directory_or_with_another_certificate_is_refused() {
    let mut net = Network::new(&["VN", "FR", "DE"]).await;
    net.edit_directory("FR", |directory| {
        directory.members.retain(|m| m.code != code("DE"));
        let vn = directory.members.iter_mut().find(|m| m.code == code("VN")).unwrap();
        vn.certificate_sha256 = hanoi247::trust::directory::fingerprint(b"another certificate");
    });
    net.start("FR").await;

    let status = net.peer_client("DE", "FR").hello(HelloRequest::default()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("not in the directory of node FR (version 2)"), "{}", status.message());

    let status = net.peer_client("VN", "FR").hello(HelloRequest::default()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("is not the one in the directory"), "{}", status.message());
    net.stop("FR").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_presenting_another_certificate_than_the_directory_pins_is_not_called() {
    let mut net = Network::new(&["VN", "FR"]).await;
    net.edit_directory("VN", |directory| {
        let fr = directory.members.iter_mut().find(|m| m.code == code("FR")).unwrap();
        fr.certificate_sha256 = hanoi247::trust::directory::fingerprint(b"another certificate");
    });
    net.start("FR").await;
    net.start("VN").await;
    let mut vn_desk = net.desk("VN");
    let id = submit(&mut vn_desk, preservation_request("FR")).await;
    eventually("VN refuses FR's certificate", async || {
        let got = vn_desk.get(hanoi247::proto::GetRequest { id: id.clone() }).await.unwrap().into_inner();
        got.message.unwrap().last_error.contains("the directory pins")
    })
    .await;
    assert!(inbox(&mut net.desk("FR")).await.is_empty(), "nothing reached FR");
    net.stop("VN").await;
    net.stop("FR").await;
}

/// VN runs on a directory without DE; a signed update adding DE reaches it: VN accepts
/// requests for DE and delivers them. `reload` makes the running VN read the file again.
async fn a_member_added_while_running_is_served(net: &mut Network, reload: impl AsyncFnOnce()) {
    net.start("DE").await;
    let mut vn_desk = net.desk("VN");
    let refused = vn_desk.submit(preservation_request("DE")).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(refused.message().contains("not in this node's directory"), "{}", refused.message());

    let de = net.config("DE");
    let de_entry = hanoi247::config::DirectoryEntry {
        code: code("DE"),
        name: "24/7 point of contact DE".into(),
        endpoint: format!("127.0.0.1:{}", de.listen.peer.port()),
        languages: vec!["de".into()],
        request_types: Vec::new(),
        time_zone: "Europe/Berlin".into(),
        phone: String::new(),
        certificate_sha256: hanoi247::trust::directory::fingerprint_of_file(&de.tls.cert).unwrap(),
        next_certificate_sha256: String::new(),
    };
    net.edit_shared_directory(|directory| directory.upsert(de_entry));
    reload().await;

    eventually("VN lists DE", async || directory_view(net, "VN").await.1.contains(&"DE".to_owned())).await;
    let id = submit(&mut vn_desk, preservation_request("DE")).await;
    wait_state(&mut vn_desk, &id, MessageState::Delivered).await;
    wait_state(&mut net.desk("DE"), &id, MessageState::Received).await;
    net.stop("DE").await;
}

/// The network made by `init`, with DE taken out of the directory before anyone starts.
async fn network_without_de() -> Network {
    let net = Network::new(&["VN", "FR", "DE"]).await;
    net.edit_shared_directory(|directory| directory.members.retain(|m| m.code != code("DE")));
    net
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_update_reaches_a_running_node_on_sighup() {
    let mut net = network_without_de().await;
    // Only SIGHUP can make VN look again within the test.
    net.edit_config("VN", "poll_interval = \"2s\"", "poll_interval = \"1h\"");
    let vn = net.spawn("VN").await;
    a_member_added_while_running_is_served(&mut net, async || vn.hangup()).await;
    assert!(net.log_of("VN").contains("SIGHUP"));
    assert_eq!(directory_view(&net, "VN").await.0, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_update_reaches_a_running_node_when_the_file_changes() {
    let mut net = network_without_de().await;
    net.edit_config("VN", "poll_interval = \"2s\"", "poll_interval = \"200ms\"");
    net.start("VN").await;
    a_member_added_while_running_is_served(&mut net, async || {}).await;
    net.stop("VN").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_member_is_refused_and_its_queue_waits_visible_until_it_is_listed_again() {
    let mut net = Network::new(&["VN", "FR"]).await;
    net.edit_config("VN", "poll_interval = \"2s\"", "poll_interval = \"200ms\"");
    net.start("VN").await;
    let mut vn_desk = net.desk("VN");
    // FR is down: the request waits in VN's queue.
    let id = submit(&mut vn_desk, preservation_request("FR")).await;

    net.edit_shared_directory(|directory| directory.members.retain(|m| m.code != code("FR")));
    eventually("VN refuses FR", async || {
        net.peer_client("FR", "VN").hello(HelloRequest::default()).await.is_err_and(|status| {
            status.code() == tonic::Code::PermissionDenied
                && status.message().contains("not in the directory")
        })
    })
    .await;
    let queue = net.desk_as("VN", "operator").get_queue(GetQueueRequest {}).await.unwrap().into_inner();
    let fr = queue.peers.iter().find(|q| q.peer == "FR").expect("FR's queue is still shown");
    assert_eq!(fr.flash, 1);
    let message = vn_desk.get(hanoi247::proto::GetRequest { id: id.clone() }).await.unwrap().into_inner();
    let state = message.message.unwrap().state();
    assert!(matches!(state, MessageState::Queued | MessageState::WaitingRetry), "{state:?}");

    // FR is listed again: its queue goes out.
    net.start("FR").await;
    let fr_config = net.config("FR");
    net.edit_shared_directory(|directory| {
        directory.upsert(hanoi247::config::DirectoryEntry {
            code: code("FR"),
            name: "24/7 point of contact FR".into(),
            endpoint: format!("127.0.0.1:{}", fr_config.listen.peer.port()),
            languages: vec!["fr".into()],
            request_types: Vec::new(),
            time_zone: "Europe/Paris".into(),
            phone: String::new(),
            certificate_sha256: hanoi247::trust::directory::fingerprint_of_file(&fr_config.tls.cert).unwrap(),
            next_certificate_sha256: String::new(),
        })
    });
    wait_state(&mut vn_desk, &id, MessageState::Delivered).await;
    net.stop("VN").await;
    net.stop("FR").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_shows_each_peers_directory_version() {
    let mut net = Network::new(&["VN", "FR"]).await;
    // FR runs on a newer directory (its own copy, version 2); VN on version 1.
    assert_eq!(net.edit_directory("FR", |_| {}), 2);
    net.start("VN").await;
    net.start("FR").await;
    let version_of = async |node: &str, peer: &str| {
        let peers = net.desk_as(node, "operator").list_peers(ListPeersRequest {}).await.unwrap().into_inner();
        (peers.directory_version, peers.peers.iter().find(|p| p.peer == peer).unwrap().directory_version)
    };
    eventually("VN sees FR on version 2", async || version_of("VN", "FR").await == (1, 2)).await;
    eventually("FR sees VN on version 1", async || version_of("FR", "VN").await == (2, 1)).await;

    // The operator's table marks the peer on an older directory.
    let peers = net.desk_as("FR", "operator").list_peers(ListPeersRequest {}).await.unwrap().into_inner();
    let table = hanoi247::cli::render::peers_table(&peers);
    assert!(table.contains("1 (old)"), "{table}");
    assert!(table.contains("this node's directory is version 2"), "{table}");

    // And Prometheus can alert on it.
    let port = net.config("FR").metrics.listen.port();
    let metric = |sample: &str| crate::operator_view::metric(port, sample);
    assert_eq!(metric("hanoi247_directory_version{peer=\"\"}"), Some(2.0));
    assert_eq!(metric("hanoi247_directory_version{peer=\"VN\"}"), Some(1.0));
    net.stop("VN").await;
    net.stop("FR").await;
}

/// Runs the real binary; returns (success, stdout, stderr).
fn hanoi247(args: &[&str], dir: &std::path::Path) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_hanoi247")).args(args).current_dir(dir).output().unwrap();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (output.status.success(), text(&output.stdout), text(&output.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secretariat_makes_adds_signs_and_verifies_with_the_cli() {
    let net = Network::new(&["VN", "FR"]).await;
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let (ok, out, err) = hanoi247(&["directory", "init", "--network", "hanoi247-test"], dir);
    assert!(ok, "{err}");
    assert!(out.contains("version 1"), "{out}");
    let (ok, _, err) = hanoi247(&["directory", "init", "--network", "hanoi247-test"], dir);
    assert!(!ok && err.contains("already exists"), "init never overwrites: {err}");

    let fr_cert = net.config("FR").tls.cert;
    let add = |code: &str, endpoint: &str| {
        hanoi247(
            &[
                "directory",
                "add",
                "--code",
                code,
                "--name",
                "24/7 point of contact",
                "--endpoint",
                endpoint,
                "--cert",
                fr_cert.to_str().unwrap(),
                "--languages",
                "fr,en",
                "--request-types",
                "PRESERVATION,TECHNICAL_ADVICE",
                "--time-zone",
                "Europe/Paris",
                "--phone",
                "+33 1",
            ],
            dir,
        )
    };
    let (ok, _, err) = add("FR", "fr.example:7247");
    assert!(ok, "{err}");
    let (ok, _, err) = add("DE", "no-port");
    assert!(!ok && err.contains("endpoint"), "{err}");
    // Added but not signed yet: nobody accepts it.
    let (ok, _, err) = hanoi247(&["directory", "verify", "--public-key", "secretariat.pub"], dir);
    assert!(!ok && err.contains("not signed"), "{err}");

    let (ok, out, err) = hanoi247(&["directory", "sign"], dir);
    assert!(ok && out.contains("version 2"), "{out}{err}");
    let (ok, out, err) = hanoi247(&["directory", "verify", "--public-key", "secretariat.pub"], dir);
    assert!(ok, "{err}");
    assert!(out.contains("version 2") && out.contains("fr.example:7247"), "{out}");
    let (ok, out, _) = hanoi247(&["directory", "verify", "--public-key", "secretariat.pub", "--json"], dir);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(ok);
    assert_eq!(
        json["members"][0]["certificate_sha256"],
        hanoi247::trust::directory::fingerprint_of_file(&fr_cert).unwrap()
    );

    // One changed byte of a value: the signature no longer verifies.
    let path = dir.join("directory.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("fr.example:7247", "fr.example:7248")).unwrap();
    let (ok, _, err) = hanoi247(&["directory", "verify", "--public-key", "secretariat.pub"], dir);
    assert!(!ok && err.contains("bad signature"), "{err}");
}

/// A command whose output goes into a closed pipe (`hanoi247 directory verify … | head -0`) ends
/// quietly by SIGPIPE, as Unix tools do, instead of panicking in `println!`.
#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let work = tempfile::tempdir().unwrap();
    let (ok, _, err) = hanoi247(&["directory", "init", "--network", "hanoi247-test"], work.path());
    assert!(ok, "{err}");
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let output = Command::new(env!("CARGO_BIN_EXE_hanoi247"))
        .args(["directory", "verify", "--public-key", "secretariat.pub"])
        .current_dir(work.path())
        .stdout(writer)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(output.status.signal(), Some(libc::SIGPIPE), "{:?} {stderr}", output.status);
}

/// A node remembers the newest directory version it used (in its store): restarted on an older
/// file, even one correctly signed, it refuses to start and says why (a replayed old directory
/// could bring back a removed member).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_on_an_older_signed_directory_refuses_to_start() {
    let mut net = Network::new(&["VN", "FR"]).await;
    let shared = net.shared_directory_path();
    let version_1 = std::fs::read(&shared).unwrap();
    let version_2 = net.edit_shared_directory(|directory| {
        directory.members.iter_mut().for_each(|m| m.name = "renamed".into());
    });
    assert_eq!(version_2, 2);
    net.start("VN").await;
    net.stop("VN").await;

    std::fs::write(&shared, &version_1).unwrap();
    let output = tokio::task::spawn_blocking({
        let config = net.config_path("VN");
        move || {
            Command::new(env!("CARGO_BIN_EXE_hanoi247"))
                .args(["node", "--config"])
                .arg(config)
                .stdin(Stdio::null())
                .output()
                .unwrap()
        }
    });
    let output = tokio::time::timeout(DEADLINE, output).await.expect("the node exits").unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("version 1 is older than version 2"), "{stderr}");

    // With the current directory back, it starts as before.
    net.edit_shared_directory(|_| {});
    net.start("VN").await;
    net.stop("VN").await;
}
