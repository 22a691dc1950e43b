//! Issue 7 (backup and restore): `hanoi247 backup` copies a running node's store consistently
//! while messages flow; `hanoi247 restore` rebuilds a store from the copy, and a node started on
//! it has every message confirmed before the backup, with its state and timeline, and works on.
//! Damaged files, non-empty targets, other nodes' backups and non-operators are refused.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use hanoi247::domain::access::Role;
use hanoi247::proto::{
    AcknowledgeRequest, BackupRequest, GetRequest, Message, MessageState, Precedence, RespondRequest,
};
use hanoi247::store::{Listing, Store};
use tokio::sync::Mutex;

use crate::support::*;

/// Runs the real binary with `args` (off the async workers) and returns what it did.
pub(crate) async fn hanoi247(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_hanoi247")).args(&args).output().unwrap()
    })
    .await
    .unwrap()
}

fn args(parts: &[&dyn AsRef<std::ffi::OsStr>]) -> Vec<String> {
    parts.iter().map(|p| p.as_ref().to_string_lossy().into_owned()).collect()
}

pub(crate) fn text(output: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Every event of the store refers to a message that holds it in its timeline, and every listed
/// message has exactly one event per timeline entry: no write is in the copy by halves.
fn check_whole_writes(store: &Store) {
    let last = *store.durable_events().borrow();
    let events = store.events_between(0, last, usize::MAX).unwrap();
    let sequences: Vec<u64> = events.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, (1..=last).collect::<Vec<_>>(), "events are gap-free up to the counter");
    let mut per_message: HashMap<String, usize> = HashMap::new();
    for event in events.iter().filter(|e| !e.overdue) {
        let id = event.message_id.parse().unwrap();
        let message =
            store.get(id).unwrap().unwrap_or_else(|| panic!("event {} without its message", event.sequence));
        let timeline = &message.message.unwrap().timeline;
        let count = per_message.entry(event.message_id.clone()).or_default();
        assert_eq!(
            timeline[*count].state, event.state,
            "event {} is the next timeline entry",
            event.sequence
        );
        *count += 1;
    }
    for listing in [Listing::Inbox, Listing::Outbox] {
        for stored in store.list(listing, usize::MAX, |_| true).unwrap() {
            let message = stored.message.unwrap();
            let id = &message.envelope.as_ref().unwrap().id;
            assert_eq!(per_message.get(id).copied().unwrap_or(0), message.timeline.len(), "events of {id}");
        }
    }
}

/// The parts of a message that a restore must keep (`overdue` is worked out when read).
fn kept(
    message: &Message,
) -> (Option<hanoi247::proto::Envelope>, i32, i32, Vec<hanoi247::proto::TimelineEntry>) {
    (message.envelope.clone(), message.direction, message.state, message.timeline.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_while_messages_flow_then_restore_keeps_every_confirmed_message() {
    let mut net = Network::new(&["VN", "FR"]).await;
    net.start("VN").await;
    net.start("FR").await;
    let (mut vn, mut fr) = (net.desk("VN"), net.desk("FR"));

    // Settled before the backup: an answered request of VN, an acknowledged one from FR.
    let answered = submit(&mut vn, preservation_request("FR")).await;
    wait_state(&mut fr, &answered, MessageState::Received).await;
    fr.respond(RespondRequest {
        id: answered.clone(),
        text: "preserved for 90 days".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let answered_before = wait_state(&mut vn, &answered, MessageState::Answered).await;
    let inbound = submit(&mut fr, advice_request("VN", Precedence::Immediate, "from FR")).await;
    wait_state(&mut vn, &inbound, MessageState::Received).await;
    vn.acknowledge(AcknowledgeRequest { id: inbound.clone(), note: "taken".into() }).await.unwrap();
    let inbound_before = wait_state(&mut vn, &inbound, MessageState::Acknowledged).await;

    // Traffic throughout the backup: submits at VN (delivered to FR as they come) and at FR
    // (delivered into VN's store).
    let confirmed = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for (writer, node, to) in [(0, "VN", "FR"), (1, "VN", "FR"), (2, "VN", "FR"), (3, "FR", "VN")] {
        let (mut desk, confirmed, stop) = (net.desk(node), Arc::clone(&confirmed), Arc::clone(&stop));
        writers.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let precedence = [Precedence::Routine, Precedence::Flash][i % 2];
                let id =
                    submit(&mut desk, advice_request(to, precedence, &format!("flow {writer}/{i}"))).await;
                if node == "VN" {
                    confirmed.lock().await.push(id);
                }
                i += 1;
            }
        }));
    }
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while confirmed.lock().await.len() < 30 {
        assert!(tokio::time::Instant::now() < deadline, "submits are too slow");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // Acknowledged as stored before the backup started.
    let before: Vec<String> = confirmed.lock().await.clone();
    let file = net.dir().join("vn.backup");
    let operator = net.client_config_path_of("VN", "operator");
    let output = hanoi247(args(&[&"backup", &"--config", &operator, &"--out", &file, &"--json"])).await;
    assert!(output.status.success(), "{}", text(&output));
    let during = confirmed.lock().await.len() - before.len();
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["node"], "VN", "{report}");
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600, "it holds case data");
    // Let the traffic go on after the backup too, then stop it.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while confirmed.lock().await.len() < before.len() + during + 10 {
        assert!(tokio::time::Instant::now() < deadline, "submits are too slow");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for writer in writers {
        writer.await.unwrap();
    }
    eprintln!("{} confirmed before the backup, {during} while it ran; {report}", before.len());

    // VN's disaster: stop it, restore its backup into a new data dir (through its config).
    net.stop("VN").await;
    let live_dir = net.config("VN").data_dir;
    net.edit_config("VN", "data_dir = \"data\"", "data_dir = \"restored\"");
    let config = net.config_path("VN");
    let output = hanoi247(args(&[&"restore", &"--in", &file, &"--config", &config])).await;
    assert!(output.status.success(), "{}", text(&output));
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(said.contains("node VN") && said.contains("messages"), "{said}");

    // Every message confirmed before the backup is there, in a state the live node passed
    // through, with the timeline it had then (a prefix of the live one); no write by halves.
    {
        let live = Store::open(&live_dir).unwrap();
        let copy = Store::open(&net.config("VN").data_dir).unwrap();
        for id in before.iter().chain([&answered, &inbound]) {
            let uuid = id.parse().unwrap();
            let restored =
                copy.get(uuid).unwrap().unwrap_or_else(|| panic!("{id} confirmed before the backup is gone"));
            let restored = restored.message.unwrap();
            let now = live.get(uuid).unwrap().unwrap().message.unwrap();
            assert!(
                now.timeline.starts_with(&restored.timeline) && !restored.timeline.is_empty(),
                "{id}: restored timeline {:?} is not a prefix of {:?}",
                restored.timeline,
                now.timeline
            );
            assert_eq!(
                restored.state,
                restored.timeline.last().unwrap().state,
                "{id}: state and timeline agree"
            );
        }
        check_whole_writes(&copy);
    }

    // The node runs on the restored store: the settled messages are as they were, and it works on.
    net.start("VN").await;
    let mut vn = net.desk("VN");
    let got = vn.get(GetRequest { id: answered.clone() }).await.unwrap().into_inner();
    assert_eq!(kept(got.message.as_ref().unwrap()), kept(&answered_before));
    assert_eq!(got.replies.len(), 2, "the acknowledgement and the response");
    let got = vn.get(GetRequest { id: inbound.clone() }).await.unwrap().into_inner();
    assert_eq!(kept(got.message.as_ref().unwrap()), kept(&inbound_before));
    let after = submit(&mut vn, advice_request("FR", Precedence::Flash, "after the restore")).await;
    wait_state(&mut fr, &after, MessageState::Received).await;
    wait_state(&mut vn, &after, MessageState::Delivered).await;
    for id in &before {
        // What was still queued in the copy is sent again; FR keeps one of each.
        wait_state(&mut vn, id, MessageState::Delivered).await;
    }
    let fr_inbox = ids(&inbox(&mut fr).await);
    assert_eq!(fr_inbox.iter().collect::<HashSet<_>>().len(), fr_inbox.len(), "no duplicates at FR");
    let from_fr = submit(&mut fr, advice_request("VN", Precedence::Flash, "to the restored node")).await;
    wait_state(&mut vn, &from_fr, MessageState::Received).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_backups_full_targets_other_nodes_and_non_operators_are_refused() {
    let clients = [
        ("VN", "officer", Role::Officer),
        ("VN", "operator", Role::Operator),
        ("VN", "police", Role::Agency),
        ("VN", "audit", Role::Auditor),
    ];
    let mut net = Network::with_clients(&["VN", "FR"], &clients).await;
    net.start("VN").await;
    let mut vn = net.desk_as("VN", "officer");
    let id = submit(&mut vn, preservation_request("FR")).await;

    // Only operators may take a backup (it holds every case); no file is left behind.
    for name in ["officer", "police", "audit"] {
        let status = net.desk_as("VN", name).backup(BackupRequest {}).await.expect_err(name);
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{name}: {status:?}");
        assert!(status.message().contains("may not call Backup"), "{name}: {status:?}");
    }
    let file = net.dir().join("vn.backup");
    let officer = net.client_config_path_of("VN", "officer");
    let output = hanoi247(args(&[&"backup", &"--config", &officer, &"--out", &file])).await;
    assert!(!output.status.success(), "{}", text(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("may not call Backup"), "{}", text(&output));
    let leftovers = std::fs::read_dir(net.dir()).unwrap().filter(|e| {
        let name = e.as_ref().unwrap().file_name();
        name.to_string_lossy().contains("vn.backup")
    });
    assert_eq!(leftovers.count(), 0, "a refused backup leaves no file");

    let operator = net.client_config_path_of("VN", "operator");
    let output = hanoi247(args(&[&"backup", &"--config", &operator, &"--out", &file])).await;
    assert!(output.status.success(), "{}", text(&output));
    let good = std::fs::read(&file).unwrap();

    // One byte changed in the middle: refused, naming the digest, nothing created.
    let mut damaged = good.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x20;
    let damaged_file = net.dir().join("damaged.backup");
    std::fs::write(&damaged_file, &damaged).unwrap();
    let target = net.dir().join("restored");
    let output = hanoi247(args(&[&"restore", &"--in", &damaged_file, &"--data-dir", &target])).await;
    assert!(!output.status.success(), "{}", text(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("SHA-256 does not match"), "{}", text(&output));
    assert!(!target.exists(), "a refused restore creates nothing");

    // Cut short (a transfer that stopped): refused the same way.
    std::fs::write(&damaged_file, &good[..good.len() - 100]).unwrap();
    let output = hanoi247(args(&[&"restore", &"--in", &damaged_file, &"--data-dir", &target])).await;
    assert!(String::from_utf8_lossy(&output.stderr).contains("SHA-256 does not match"), "{}", text(&output));

    // Not a backup at all.
    let output = hanoi247(args(&[&"restore", &"--in", &operator, &"--data-dir", &target])).await;
    assert!(String::from_utf8_lossy(&output.stderr).contains("not a hanoi247 backup"), "{}", text(&output));

    // A target that holds something (here: the running node's own store) is never touched.
    let live = net.config("VN").data_dir;
    let before: Vec<_> = std::fs::read_dir(&live).unwrap().map(|e| e.unwrap().file_name()).collect();
    let output = hanoi247(args(&[&"restore", &"--in", &file, &"--data-dir", &live])).await;
    assert!(!output.status.success(), "{}", text(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("not empty"), "{}", text(&output));
    let after: Vec<_> = std::fs::read_dir(&live).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(before, after);
    vn.get(GetRequest { id: id.clone() }).await.expect("the running node is unaffected");

    // Another node's config: refused, naming both nodes.
    net.edit_config("FR", "data_dir = \"data\"", "data_dir = \"fr-restored\"");
    let output = hanoi247(args(&[&"restore", &"--in", &file, &"--config", &net.config_path("FR")])).await;
    assert!(!output.status.success(), "{}", text(&output));
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(said.contains("of node VN") && said.contains("node FR"), "{}", text(&output));
    assert!(!net.config("FR").data_dir.exists());

    // The good file restores into an empty directory; with --data-dir the node certificate that
    // checks its signature is named (issue 14), without it the restore says to.
    std::fs::create_dir(&target).unwrap();
    let output = hanoi247(args(&[&"restore", &"--in", &file, &"--data-dir", &target])).await;
    assert!(String::from_utf8_lossy(&output.stderr).contains("--cert"), "{}", text(&output));
    let cert = net.config("VN").tls.cert;
    let output =
        hanoi247(args(&[&"restore", &"--in", &file, &"--data-dir", &target, &"--cert", &cert])).await;
    assert!(output.status.success(), "{}", text(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("messages 1,"), "{}", text(&output));
    let copy = Store::open(&target).unwrap();
    assert!(copy.get(id.parse().unwrap()).unwrap().is_some());
    assert!(Path::new(&target).join("db").exists());
}
