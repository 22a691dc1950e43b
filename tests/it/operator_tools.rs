//! Issue 20: `inspect --backup` browses a backup offline and never delivers; `show --proof`
//! writes the proof mode 0600; `send --expires-in` sets the request's expiry.

use std::os::unix::fs::PermissionsExt as _;
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use hanoi247::domain::timestamp::to_system;
use hanoi247::proto::{GetRequest, MessageState, Precedence};

use crate::support::*;

/// Runs the real binary with a deadline: a command that does not exit fails the test.
async fn hanoi247(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let run = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_hanoi247")).args(args).output().unwrap()
    });
    tokio::time::timeout(DEADLINE, run).await.expect("the command exits by itself").unwrap()
}

fn out(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_lists_a_backup_offline_and_delivers_nothing() {
    let mut net = Network::new(&["VN", "FR", "DE"]).await;
    net.start("VN").await;
    net.start("DE").await;
    let mut de = net.desk("DE");
    let received = submit(&mut de, advice_request("VN", Precedence::Immediate, "inbound to inspect")).await;
    wait_state(&mut de, &received, MessageState::Delivered).await;
    let mut vn = net.desk("VN");
    let waiting =
        submit(&mut vn, advice_request("FR", Precedence::Flash, "waiting for FR in the backup")).await;
    wait_state(&mut vn, &waiting, MessageState::WaitingRetry).await;

    let file = net.dir().join("vn.backup");
    let operator = net.client_config_path_of("VN", "operator");
    let made =
        hanoi247(&["backup", "--config", operator.to_str().unwrap(), "--out", file.to_str().unwrap()]).await;
    assert!(made.status.success(), "{}", out(&made));
    net.stop("VN").await;
    // FR is up now: a live copy of VN's store would deliver the waiting request to it.
    net.start("FR").await;

    let cert = net.config("VN").tls.cert;
    let (file, cert) = (file.to_str().unwrap(), cert.to_str().unwrap());
    let listed = hanoi247(&["inspect", "--backup", file, "--cert", cert]).await;
    assert!(listed.status.success(), "{}", out(&listed));
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(text.contains("backup of node VN"), "{text}");
    assert!(text.contains("INBOX") && text.contains("inbound to inspect"), "{text}");
    assert!(text.contains("OUTBOX") && text.contains("waiting for FR in the backup"), "{text}");
    assert!(text.contains("AUDIT LOG") && text.contains("WAITING_RETRY"), "{text}");

    let shown = hanoi247(&["inspect", "--backup", file, "--cert", cert, "--message", &waiting]).await;
    assert!(shown.status.success(), "{}", out(&shown));
    assert!(
        String::from_utf8_lossy(&shown.stdout).contains("waiting for FR in the backup"),
        "{}",
        out(&shown)
    );

    // Bad inputs: each named, nothing made.
    let unsigned = hanoi247(&["inspect", "--backup", file]).await;
    assert!(!unsigned.status.success() && out(&unsigned).contains("--cert"), "{}", out(&unsigned));
    let not_an_id = hanoi247(&["inspect", "--backup", file, "--cert", cert, "--message", "nope"]).await;
    assert!(!not_an_id.status.success() && out(&not_an_id).contains("--message"), "{}", out(&not_an_id));
    let unknown = uuid::Uuid::now_v7().to_string();
    let absent = hanoi247(&["inspect", "--backup", file, "--cert", cert, "--message", &unknown]).await;
    assert!(!absent.status.success() && out(&absent).contains("not in this backup"), "{}", out(&absent));
    let damaged = net.dir().join("damaged.backup");
    let mut bytes = std::fs::read(file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&damaged, bytes).unwrap();
    let refused = hanoi247(&["inspect", "--backup", damaged.to_str().unwrap(), "--cert", cert]).await;
    assert!(!refused.status.success(), "{}", out(&refused));

    // The inspections have exited; FR never got the request that waited in the backup.
    let mut fr = net.desk("FR");
    assert!(inbox(&mut fr).await.is_empty(), "inspect delivered from a backup");
    net.stop("FR").await;
    net.stop("DE").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proof_file_is_private() {
    let mut net = Network::new(&["VN", "DE"]).await;
    net.start("VN").await;
    net.start("DE").await;
    let mut vn = net.desk("VN");
    let id = submit(&mut vn, advice_request("DE", Precedence::Flash, "proved")).await;
    wait_state(&mut vn, &id, MessageState::Delivered).await;
    let file = net.dir().join("proof.json");
    crate::signing::show_proof(&net, "VN", &id, &file).await;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "proof file mode {mode:o}");
    net.stop("VN").await;
    net.stop("DE").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_expires_in_sets_the_expiry() {
    let mut net = Network::new(&["VN", "FR"]).await;
    net.start("VN").await;
    let client = net.client_config_path("VN");
    let client = client.to_str().unwrap();
    let send = |expires_in: &'static str| {
        let client = client.to_owned();
        async move {
            hanoi247(&[
                "send",
                "--config",
                &client,
                "--to",
                "FR",
                "--type",
                "technical-advice",
                "--precedence",
                "routine",
                "--subject",
                "expiring",
                "--expires-in",
                expires_in,
            ])
            .await
        }
    };
    let before = SystemTime::now();
    let sent = send("2h").await;
    assert!(sent.status.success(), "{}", out(&sent));
    let id = String::from_utf8_lossy(&sent.stdout).split_whitespace().next().unwrap().to_owned();
    let mut vn = net.desk("VN");
    let message = vn.get(GetRequest { id }).await.unwrap().into_inner().message.unwrap();
    let expires = to_system(message.envelope.unwrap().expires_at.as_ref().unwrap());
    let want = before + Duration::from_secs(2 * 3600);
    assert!(expires >= want && expires <= want + Duration::from_secs(60), "{expires:?} vs {want:?}");

    // Bad inputs: refused, naming the flag or the field, and nothing queued.
    let queued = outbox(&mut vn).await.len();
    let bad = send("soon").await;
    assert!(!bad.status.success() && out(&bad).contains("--expires-in"), "{}", out(&bad));
    let too_long = send("100years").await;
    assert!(!too_long.status.success() && out(&too_long).contains("expires_at"), "{}", out(&too_long));
    assert_eq!(outbox(&mut vn).await.len(), queued);
    net.stop("VN").await;
}
