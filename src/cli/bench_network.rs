//! `hanoi247 bench --peers N`: a network of N + 1 members, one node process each on loopback
//! (`init`, real mTLS, real stores in a temp dir), measured from the first member, the
//! broadcaster: its start-up with every peer down, its CPU while a FLASH is queued to each of
//! them and they stay down, then (all peers up) one FLASH to each peer sent at once, timed from
//! the first `Submit` to the last receipt, and its memory and open files with every peer
//! connected. The figures and targets are in `docs/benchmarks.md` ("193 members").

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::cli::bench::{BenchError, NodeProcess, bar, cpu_time, fail, percentiles, ready};
use crate::cli::desk_client::{self, DeskClient};
use crate::cli::init::{InitOptions, NodePlan, init_network};
use crate::config::ClientConfig;
use crate::domain::identity::NodeCode;
use crate::proto::{GetQueueRequest, MessageState, Precedence, RequestType, SubmitRequest, WatchRequest};

/// How long any phase may take before the bench gives up.
const PHASE_DEADLINE: Duration = Duration::from_secs(300);
/// Most members: two-letter codes AA..ZZ.
const MOST_MEMBERS: usize = 26 * 26;
/// Where planned listener ports start: below the kernel's ephemeral range (32768 and up), so no
/// outgoing connection of the mesh can take one between planning and binding.
const FIRST_PORT: u16 = 20_000;
const LAST_PORT: u16 = 32_000;

/// `bench --peers` options.
#[derive(Debug, Clone)]
pub struct NetworkBenchOptions {
    /// Peers of the broadcaster (the network has one member more).
    pub peers: usize,
    /// With every peer down and a FLASH queued to each: how long the retries run before the CPU
    /// window (backoff grows towards `retry_max` meanwhile).
    pub settle: Duration,
    /// The CPU window itself.
    pub window: Duration,
    /// Keep the temp dir (configs, stores, one log per node) and report its path.
    pub keep: bool,
}

/// Member codes AA, AB, …: the first is the broadcaster.
fn member_codes(count: usize) -> Result<Vec<NodeCode>, BenchError> {
    if !(2..=MOST_MEMBERS).contains(&count) {
        return Err(fail(format!("--peers: between 1 and {} peers", MOST_MEMBERS - 1)));
    }
    (0..count)
        .map(|i| {
            // i < 676, so both letters are within A..=Z.
            let letters = [b'A' + (i / 26) as u8, b'A' + (i % 26) as u8];
            String::from_utf8_lossy(&letters).parse().map_err(fail)
        })
        .collect()
}

/// `count` loopback ports free right now, each checked by binding it (all held until the last
/// is found, so none is handed out twice).
fn planned_ports(count: usize) -> Result<Vec<u16>, BenchError> {
    let start = FIRST_PORT + (std::process::id() % 40) as u16 * 100;
    let mut held = Vec::with_capacity(count);
    for port in (start..LAST_PORT).chain(FIRST_PORT..start) {
        if held.len() == count {
            break;
        }
        if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            held.push((port, listener));
        }
    }
    if held.len() < count {
        return Err(fail(format!("only {} free ports between {FIRST_PORT} and {LAST_PORT}", held.len())));
    }
    Ok(held.into_iter().map(|(port, _)| port).collect())
}

/// A field of `/proc/<pid>/status` in KiB (`VmRSS:`, `VmHWM:`), as MiB; 0 when unreadable.
fn status_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

/// Open file descriptors of `pid` (sockets, the store's files, the log); 0 when unreadable.
fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |entries| entries.count())
}

/// The machine's load averages (1, 5, 15 minutes) as `/proc/loadavg` has them.
fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// GET `/readyz` from a metrics listener: whether it answered 200.
async fn answers_ready(port: u16) -> bool {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else { return false };
    if stream.write_all(b"GET /readyz HTTP/1.0\r\nHost: localhost\r\n\r\n").await.is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await.is_ok() && head.ends_with(b"200")
}

/// Waits until every metrics listener in `ports` says ready.
async fn all_ready(ports: &[u16]) -> Result<(), BenchError> {
    let started = Instant::now();
    let mut waiting = ports.to_vec();
    let progress = bar(waiting.len(), "Peers starting");
    while !waiting.is_empty() {
        let mut still = Vec::new();
        for port in waiting {
            if answers_ready(port).await {
                progress.inc(1);
            } else {
                still.push(port);
            }
        }
        waiting = still;
        if started.elapsed() > PHASE_DEADLINE {
            return Err(fail(format!("{} peers not ready within {PHASE_DEADLINE:?}", waiting.len())));
        }
        if !waiting.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    progress.finish_and_clear();
    Ok(())
}

/// The network has settled when all its processes together use less than this many cores: the
/// peers' start-up (every member says `Hello` to every other, a TLS handshake each) is over.
const SETTLED_CORES: f64 = 0.5;
/// Over this long a window.
const SETTLE_SAMPLE: Duration = Duration::from_secs(2);
/// Waiting longer for it than this, the broadcast starts anyway (and the report says how busy).
const MOST_SETTLING: Duration = Duration::from_secs(180);

/// Waits until the processes `pids` together use less than [`SETTLED_CORES`]; returns how long
/// that took and the cores they used in the last window.
async fn settled(pids: &[u32]) -> (Duration, f64) {
    let started = Instant::now();
    let total = || pids.iter().map(|pid| cpu_time(*pid)).sum::<Duration>();
    loop {
        let before = total();
        tokio::time::sleep(SETTLE_SAMPLE).await;
        let cores = total().saturating_sub(before).as_secs_f64() / SETTLE_SAMPLE.as_secs_f64();
        if cores < SETTLED_CORES || started.elapsed() > MOST_SETTLING {
            return (started.elapsed(), cores);
        }
    }
}

/// Waits until the broadcaster's queue to every peer is empty.
async fn drained(operator: &mut DeskClient) -> Result<(), BenchError> {
    let started = Instant::now();
    loop {
        let queue = operator.get_queue(GetQueueRequest {}).await.map_err(fail)?.into_inner();
        let waiting: u32 = queue.peers.iter().map(|q| q.flash + q.immediate + q.priority + q.routine).sum();
        if waiting == 0 {
            return Ok(());
        }
        if started.elapsed() > PHASE_DEADLINE {
            return Err(fail(format!("{waiting} messages still queued after {PHASE_DEADLINE:?}")));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn flash_to(peer: NodeCode, i: usize) -> SubmitRequest {
    SubmitRequest {
        destination: peer.to_string(),
        request_type: RequestType::TechnicalAdvice as i32,
        precedence: Precedence::Flash as i32,
        subject: format!("bench broadcast {i}"),
        body: "x".repeat(1024),
        ..Default::default()
    }
}

/// Submits one FLASH to each of `peers`, all at once; returns each message id with the instant
/// its `Submit` began.
async fn submit_to_each(desk: &DeskClient, peers: &[NodeCode]) -> Result<Vec<(String, Instant)>, BenchError> {
    let mut tasks = Vec::with_capacity(peers.len());
    for (i, peer) in peers.iter().enumerate() {
        let (mut desk, request) = (desk.clone(), flash_to(*peer, i));
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let answer = desk.submit(request).await?.into_inner();
            let id = answer.message.and_then(|m| m.envelope).map(|e| e.id).unwrap_or_default();
            Ok::<_, tonic::Status>((id, started))
        }));
    }
    let mut sent = Vec::with_capacity(tasks.len());
    for task in tasks {
        sent.push(task.await.map_err(fail)?.map_err(fail)?);
    }
    Ok(sent)
}

/// The broadcaster's configuration and the peers', as `init` wrote them, adjusted for one machine.
fn adjust_configs(configs: &[(NodeCode, PathBuf)], members: usize) -> Result<(), BenchError> {
    for (_, path) in configs {
        // Every peer connects from 127.0.0.1 here, where a real network has one address per
        // member: the per-address bound must admit them all. The desk call rate is lifted as
        // in the two-node bench. Everything else (retries, timeouts) stays at its default.
        let limits = format!(
            "[limits]\nmax_peer_connections_per_address = {}\ndesk_calls_per_second = 1000000\n\
             desk_call_burst = 1000000\n\n[deadlines]\n",
            members.max(32)
        );
        let text = std::fs::read_to_string(path).map_err(fail)?;
        if !text.contains("[deadlines]\n") {
            return Err(fail(format!("{}: no [deadlines] section to put [limits] before", path.display())));
        }
        std::fs::write(path, text.replacen("[deadlines]\n", &limits, 1)).map_err(fail)?;
    }
    Ok(())
}

/// Runs the network bench and returns every figure as JSON.
pub async fn run(options: NetworkBenchOptions) -> Result<Value, BenchError> {
    let load_before = load_average();
    let members = options.peers + 1;
    let codes = member_codes(members)?;
    let ports = planned_ports(4 * members)?;
    let plans: Vec<NodePlan> = codes
        .iter()
        .zip(ports.chunks(4))
        .map(|(code, p)| NodePlan {
            code: *code,
            peer_port: p[0],
            desk_port: p[1],
            metrics_port: p[2],
            console_port: p[3],
        })
        .collect();
    let dir = tempfile::tempdir().map_err(fail)?;
    let started = Instant::now();
    let init = InitOptions {
        out: dir.path().join("net"),
        network: "hanoi247-bench".into(),
        nodes: plans.clone(),
        clients: Vec::new(),
    };
    let report = init_network(&init).map_err(fail)?;
    let init_s = started.elapsed().as_secs_f64();
    adjust_configs(&report.node_configs, members)?;

    let broadcaster = codes[0];
    let peers = &codes[1..];
    let config_of =
        |code: NodeCode| report.node_config(code).map(Path::to_owned).ok_or_else(|| fail("no config"));
    let client = |name: &str| -> Result<DeskClient, BenchError> {
        let path = report.client_config_named(broadcaster, name).ok_or_else(|| fail("no client config"))?;
        desk_client::connect(&ClientConfig::load(path).map_err(fail)?).map_err(fail)
    };
    let log = |code: NodeCode| dir.path().join(format!("{}.log", code.as_str().to_ascii_lowercase()));

    // 1. The broadcaster's start-up with every peer down.
    let node = NodeProcess::start(&config_of(broadcaster)?, &log(broadcaster))?;
    let mut desk = client("officer")?;
    let mut operator = client("operator")?;
    let startup = ready(&mut desk).await?;
    let startup_rss = status_mib(node.pid(), "VmRSS:");

    // 2. A FLASH queued to each peer, every peer down: retries and backoff only.
    submit_to_each(&desk, peers).await?;
    tokio::time::sleep(options.settle).await;
    let (cpu_before, window_start) = (node.cpu(), Instant::now());
    tokio::time::sleep(options.window).await;
    let window = window_start.elapsed();
    let down_cpu_percent = node.cpu().saturating_sub(cpu_before).as_secs_f64() * 100.0 / window.as_secs_f64();
    let down_rss = status_mib(node.pid(), "VmRSS:");
    let down_files = open_files(node.pid());

    // 3. Every peer starts; the queued FLASHes go out (a peer's first call wakes the
    //    broadcaster's task for it out of its backoff).
    let started = Instant::now();
    let mut processes = Vec::with_capacity(peers.len());
    for peer in peers {
        processes.push(NodeProcess::start(&config_of(*peer)?, &log(*peer))?);
    }
    let metrics_ports: Vec<u16> = plans[1..].iter().map(|p| p.metrics_port).collect();
    all_ready(&metrics_ports).await?;
    let peers_start_s = started.elapsed().as_secs_f64();
    drained(&mut operator).await?;
    let queued_delivered_s = started.elapsed().as_secs_f64();

    // 4. The broadcast: one FLASH to each peer, all submitted at once, every peer connected,
    //    once the peers' own start-up no longer takes the machine's CPU.
    let pids: Vec<u32> = processes.iter().map(NodeProcess::pid).chain([node.pid()]).collect();
    let (settling, settled_cores) = settled(&pids).await;
    let mut events = desk.watch(WatchRequest { after_sequence: None }).await.map_err(fail)?.into_inner();
    let first_submit = Instant::now();
    let submitting = {
        let (desk, peers) = (desk.clone(), peers.to_vec());
        tokio::spawn(async move { submit_to_each(&desk, &peers).await })
    };
    // Receipts may be recorded before their Submit's answer arrives: note every DELIVERED with
    // its time and match them to the ids afterwards.
    let mut delivered: HashMap<String, Instant> = HashMap::new();
    let progress = bar(peers.len(), "Broadcast: receipts");
    while delivered.len() < peers.len() {
        let event = tokio::time::timeout(PHASE_DEADLINE, events.message())
            .await
            .map_err(|_| {
                fail(format!("{} of {} receipts within {PHASE_DEADLINE:?}", delivered.len(), peers.len()))
            })?
            .map_err(fail)?
            .ok_or_else(|| fail("watch ended"))?;
        if event.state() == MessageState::Delivered {
            delivered.entry(event.message_id).or_insert_with(Instant::now);
            progress.inc(1);
        }
    }
    progress.finish_and_clear();
    drop(events);
    let sent = submitting.await.map_err(fail)??;
    let mut latencies = Vec::with_capacity(sent.len());
    let mut last = first_submit;
    for (id, submitted) in &sent {
        let at = delivered.get(id).ok_or_else(|| fail(format!("no receipt recorded for {id}")))?;
        latencies.push(at.saturating_duration_since(*submitted));
        last = last.max(*at);
    }
    let complete_ms = last.duration_since(first_submit).as_secs_f64() * 1000.0;

    // 5. Memory and files with every peer connected.
    let connected = json!({
        "rss_mib": status_mib(node.pid(), "VmRSS:"),
        "peak_rss_mib": status_mib(node.pid(), "VmHWM:"),
        "open_files": open_files(node.pid()),
    });
    let peer_rss: Vec<f64> = processes.iter().map(|p| status_mib(p.pid(), "VmRSS:")).collect();
    let all_rss = peer_rss.iter().sum::<f64>() + status_mib(node.pid(), "VmRSS:");
    let max_peer_rss = peer_rss.iter().copied().fold(0.0, f64::max);

    // Every node stops at once (SIGTERM), then each is waited for.
    node.terminate()?;
    for process in &processes {
        process.terminate()?;
    }
    node.wait()?;
    for process in processes {
        process.wait()?;
    }
    let kept = options.keep.then(|| dir.keep());
    Ok(json!({
        "kept_dir": kept,
        "members": members,
        "peers": options.peers,
        "broadcaster": broadcaster.to_string(),
        "machine": {
            "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "load_average_before": load_before,
            "load_average_after": load_average(),
        },
        "init_s": init_s,
        "startup_peers_down_s": startup.as_secs_f64(),
        "startup_rss_mib": startup_rss,
        "peers_down": {
            "queued_flash": options.peers,
            "settle_s": options.settle.as_secs_f64(),
            "window_s": window.as_secs_f64(),
            "cpu_percent_of_core": down_cpu_percent,
            "rss_mib": down_rss,
            "open_files": down_files,
        },
        "peers_start_s": peers_start_s,
        "queued_delivered_after_peers_start_s": queued_delivered_s,
        "broadcast": {
            "settling_s": settling.as_secs_f64(),
            "network_cores_before": settled_cores,
            "messages": sent.len(),
            "complete_ms": complete_ms,
            "latency": percentiles(&mut latencies),
        },
        "connected": connected,
        "peer_rss_mib": { "max": max_peer_rss, "all_processes_total": all_rss },
    }))
}

/// The figures as a table beside their targets.
pub fn table(report: &Value) -> String {
    let f = |v: &Value| v.as_f64().unwrap_or(0.0);
    let peers = &report["peers"];
    let latency = &report["broadcast"]["latency"];
    let rows = [
        (
            format!("init of {} members", report["members"]),
            format!("{:.1} s", f(&report["init_s"])),
            String::new(),
        ),
        (
            format!("start-up, {peers} peers down"),
            format!("{:.3} s, {:.0} MiB", f(&report["startup_peers_down_s"]), f(&report["startup_rss_mib"])),
            String::new(),
        ),
        (
            format!("CPU, {peers} peers down, a FLASH queued to each"),
            format!(
                "{:.2} % of a core over {:.0} s (after {:.0} s), {:.0} MiB, {} files",
                f(&report["peers_down"]["cpu_percent_of_core"]),
                f(&report["peers_down"]["window_s"]),
                f(&report["peers_down"]["settle_s"]),
                f(&report["peers_down"]["rss_mib"]),
                report["peers_down"]["open_files"]
            ),
            "≤ 0.5 %".into(),
        ),
        (
            format!("{peers} peers started, queued FLASHes delivered"),
            format!(
                "{:.1} s, {:.1} s",
                f(&report["peers_start_s"]),
                f(&report["queued_delivered_after_peers_start_s"])
            ),
            String::new(),
        ),
        (
            format!("broadcast: a FLASH to each of {peers}"),
            format!(
                "complete {:.0} ms; each p50 {:.0} ms, max {:.0} ms (network at {:.2} cores)",
                f(&report["broadcast"]["complete_ms"]),
                f(&latency["p50_ms"]),
                f(&latency["max_ms"]),
                f(&report["broadcast"]["network_cores_before"])
            ),
            "complete ≤ 1 s".into(),
        ),
        (
            format!("broadcaster, {peers} peers connected"),
            format!(
                "RSS {:.0} MiB (peak {:.0}), {} open files",
                f(&report["connected"]["rss_mib"]),
                f(&report["connected"]["peak_rss_mib"]),
                report["connected"]["open_files"]
            ),
            "≤ 64 MiB".into(),
        ),
        (
            "every node's RSS".into(),
            format!(
                "largest peer {:.0} MiB, all {} processes {:.0} MiB",
                f(&report["peer_rss_mib"]["max"]),
                report["members"],
                f(&report["peer_rss_mib"]["all_processes_total"])
            ),
            String::new(),
        ),
        (
            "machine".into(),
            format!(
                "{} CPUs, load {} before, {} after",
                report["machine"]["cpus"],
                report["machine"]["load_average_before"].as_str().unwrap_or(""),
                report["machine"]["load_average_after"].as_str().unwrap_or("")
            ),
            String::new(),
        ),
    ];
    let mut out = format!("{:<46} {:<64} {}\n", "FIGURE", "MEASURED", "TARGET");
    for (figure, measured, target) in rows {
        out.push_str(&format!("{figure:<46} {measured:<64} {target}\n"));
    }
    if let Some(kept) = report["kept_dir"].as_str() {
        out.push_str(&format!("\nkept: {kept} (configs, stores, one log per node)\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_codes_are_distinct_and_bounded() {
        let codes = member_codes(193).unwrap();
        assert_eq!(codes.first().map(NodeCode::as_str), Some("AA"));
        assert_eq!(codes.last().map(NodeCode::as_str), Some("HK"));
        let distinct: std::collections::BTreeSet<_> = codes.iter().collect();
        assert_eq!(distinct.len(), 193);
        assert!(member_codes(MOST_MEMBERS).is_ok());
        assert!(member_codes(MOST_MEMBERS + 1).is_err());
        assert!(member_codes(1).is_err());
    }

    #[test]
    fn the_process_figures_of_this_process_are_read() {
        let pid = std::process::id();
        assert!(status_mib(pid, "VmRSS:") > 0.0);
        assert!(status_mib(pid, "VmHWM:") >= status_mib(pid, "VmRSS:") - 1.0);
        assert!(open_files(pid) >= 3);
        assert_eq!(load_average().split(' ').count(), 3);
    }
}
