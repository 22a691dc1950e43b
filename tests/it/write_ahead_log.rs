//! Issue 13 (the write-ahead log): a write is durable once its log frame is synced; sled is
//! checkpointed behind it and the log cut. SIGKILL during checkpoints and cuts loses no confirmed
//! write; a torn final frame is dropped with a WARN; damage followed by good frames stops the
//! node with an error naming the offset — never silent loss. Crash points (`store::crash_point`)
//! kill the node exactly inside an append, a checkpoint and a log cut.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use hanoi247::proto::{GetRequest, Precedence};

use crate::support::*;

/// Sets `node`'s checkpoint interval (`[store] checkpoint_interval` of its config).
fn checkpoint_every(net: &Network, node: &str, interval: &str) {
    net.edit_config(node, "checkpoint_interval = \"2s\"", &format!("checkpoint_interval = \"{interval}\""));
}

fn wal_dir(net: &Network, node: &str) -> PathBuf {
    net.config(node).data_dir.join("wal")
}

/// The log segments of `node`, oldest first.
fn segments(net: &Network, node: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(wal_dir(net, node))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

/// The offsets of the frames in a segment, and where the last one ends (frame layout: "H247",
/// payload length, CRC, first LSN, count, payload; see `store::wal`).
fn frames(segment: &Path) -> (Vec<usize>, usize) {
    let bytes = std::fs::read(segment).unwrap();
    let (mut offsets, mut at) = (Vec::new(), 0);
    while bytes.get(at..at + 4) == Some(b"H247".as_slice()) {
        offsets.push(at);
        let length = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        at += 24 + length;
    }
    (offsets, at)
}

/// The newest segment that holds frames, with its frame offsets and end.
fn last_written_segment(net: &Network, node: &str) -> (PathBuf, Vec<usize>, usize) {
    segments(net, node)
        .into_iter()
        .rev()
        .map(|path| {
            let (offsets, end) = frames(&path);
            (path, offsets, end)
        })
        .find(|(_, offsets, _)| !offsets.is_empty())
        .expect("a segment with frames")
}

fn write_at(path: &Path, offset: usize, bytes: &[u8]) {
    use std::os::unix::fs::FileExt as _;
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(bytes, offset as u64).unwrap();
    file.sync_all().unwrap();
}

/// Submits `count` requests one after the other (each its own frame) and returns their ids.
async fn submit_one_by_one(net: &Network, count: usize) -> Vec<String> {
    let mut vn = net.desk("VN");
    let mut ids = Vec::new();
    for i in 0..count {
        ids.push(
            submit(&mut vn, advice_request("FR", Precedence::Routine, &format!("one by one {i}"))).await,
        );
    }
    ids
}

async fn assert_all_stored(net: &Network, ids: &[String]) {
    let mut vn = net.desk("VN");
    for id in ids {
        let found = vn.get(GetRequest { id: id.clone() }).await;
        found.unwrap_or_else(|s| panic!("{id} was confirmed but is gone: {s:?}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_checkpoints_and_log_cuts_loses_no_confirmed_submit() {
    let net = Network::new(&["VN", "FR"]).await;
    // A checkpoint every 100 ms: kills land before, inside and after checkpoints and cuts.
    checkpoint_every(&net, "VN", "100ms");
    let mut confirmed = Vec::new();
    for _ in 0..3 {
        let vn_process = net.spawn("VN").await;
        // 24 KiB bodies: the rounds fill more than one 16 MiB log segment.
        confirmed.extend(burst_then_kill9(&net, "VN", vn_process, 16, 24 * 1024, 300).await);
    }
    let _vn_process = net.spawn("VN").await;
    assert_all_stored(&net, &confirmed).await;
    // More than 3 × 300 × 24 KiB went through the log, yet the checkpoints cut it behind them.
    let kept = segments(&net, "VN").len();
    assert!(kept <= 3, "{kept} segments kept: the log was not cut");
    eprintln!(
        "{} confirmed submissions survived 3 SIGKILLs during checkpoints; {kept} segments kept",
        confirmed.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_frame_at_the_end_of_the_log_is_dropped_with_a_warning() {
    let net = Network::new(&["VN", "FR"]).await;
    // No checkpoint during the test: every write is only in the log.
    checkpoint_every(&net, "VN", "1h");
    let vn_process = net.spawn("VN").await;
    let ids = submit_one_by_one(&net, 5).await;
    vn_process.kill9();
    // A crash inside an append: the next frame's header and part of its records reached the disk.
    let (segment, _, end) = last_written_segment(&net, "VN");
    let mut torn = b"H247".to_vec();
    torn.extend_from_slice(&4096u32.to_le_bytes());
    torn.extend_from_slice(&[0xab; 300]);
    write_at(&segment, end, &torn);

    let _vn_process = net.spawn("VN").await;
    assert_all_stored(&net, &ids).await;
    let log = net.log_of("VN");
    assert!(log.contains("dropping a torn final frame") && log.contains("WARN"), "{log}");
    // Cut away, so the next start finds a clean log; new frames go to a new segment.
    assert_eq!(std::fs::metadata(&segment).unwrap().len() as usize, end);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_in_the_middle_of_the_log_stops_the_node_naming_the_offset() {
    let net = Network::new(&["VN", "FR"]).await;
    checkpoint_every(&net, "VN", "1h");
    let vn_process = net.spawn("VN").await;
    submit_one_by_one(&net, 5).await;
    vn_process.kill9();
    let (segment, offsets, _) = last_written_segment(&net, "VN");
    assert!(offsets.len() >= 3, "{offsets:?}");
    // One flipped byte inside the second frame's records, with good frames after it.
    let damaged = offsets[1];
    let bytes = std::fs::read(&segment).unwrap();
    write_at(&segment, damaged + 30, &[bytes[damaged + 30] ^ 0x40]);

    // sled may already hold the damaged frame's records (it writes its buffers when they fill):
    // then the node starts and says it skipped the frame; otherwise it refuses to start, naming
    // the segment and offset. Never silently.
    let log_path = net.dir().join("VN-damaged.log");
    let mut node = Command::new(env!("CARGO_BIN_EXE_hanoi247"))
        .args(["node", "--config"])
        .arg(net.config_path("VN"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        if let Some(status) = node.try_wait().unwrap() {
            assert!(!status.success(), "the node stopped without an error: {log}");
            assert!(log.contains(&format!("the frame at byte {damaged} is damaged")), "{log}");
            assert!(log.contains(&segment.file_name().unwrap().to_string_lossy().to_string()), "{log}");
            break;
        }
        if log.contains("a damaged frame is skipped; the checkpoint covers its records") {
            node.kill().unwrap();
            node.wait().unwrap();
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the node said nothing about the damage: {log}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Submits from 8 writers, each request `body_bytes` long, until the node dies by its armed
/// crash point (bounded: at most 2,000 each); returns the ids it confirmed. The node must have
/// died by SIGKILL, not by anything else.
async fn submit_until_it_crashes(net: &Network, mut process: ChildNode, body_bytes: usize) -> Vec<String> {
    use std::os::unix::process::ExitStatusExt as _;
    let mut writers = tokio::task::JoinSet::new();
    for writer in 0..8 {
        let mut desk = net.desk("VN");
        writers.spawn(async move {
            let mut confirmed = Vec::new();
            for i in 0..2000 {
                let mut request = advice_request("FR", Precedence::Routine, &format!("crash {writer}/{i}"));
                request.body = "x".repeat(body_bytes);
                match desk.submit(request).await {
                    Ok(response) => {
                        confirmed.push(response.into_inner().message.unwrap().envelope.unwrap().id)
                    }
                    // The node died: this one was never confirmed.
                    Err(_) => break,
                }
            }
            confirmed
        });
    }
    let confirmed: Vec<String> = writers.join_all().await.into_iter().flatten().collect();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = process.child.try_wait().unwrap() {
            break status;
        }
        assert!(tokio::time::Instant::now() < deadline, "the crash point never fired");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(status.signal(), Some(9), "the node should have killed itself with SIGKILL: {status:?}");
    confirmed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_inside_an_append_a_checkpoint_or_a_log_cut_the_node_loses_no_confirmed_write() {
    // (crash point, its pass that kills, request body size): a cut needs a full 16 MiB segment
    // behind the checkpoint, so its requests are 24 KiB.
    for (point, pass, body_bytes) in
        [("append", "40", 1024), ("checkpoint", "3", 1024), ("cut", "1", 24 * 1024)]
    {
        let net = Network::new(&["VN", "FR"]).await;
        checkpoint_every(&net, "VN", "100ms");
        let armed = format!("{point}:{pass}");
        let process = net.spawn_with_env("VN", &[(hanoi247::store::crash_point::VARIABLE, &armed)]).await;
        let confirmed = submit_until_it_crashes(&net, process, body_bytes).await;
        assert!(!confirmed.is_empty(), "{point}: nothing was confirmed before the crash");
        let _vn = net.spawn("VN").await;
        assert_all_stored(&net, &confirmed).await;
        let log = net.log_of("VN");
        if point == "append" {
            assert!(
                log.contains("dropping a torn final frame"),
                "{point}: the torn frame was not reported:\n{log}"
            );
        }
        eprintln!("killed inside {point}: {} confirmed writes all there after restart", confirmed.len());
    }
}
