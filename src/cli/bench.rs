//! `hanoi247 bench`: two nodes (VN sends, FR receives) as child processes of this binary on
//! loopback, real mTLS, real flushed sled stores in a temp dir, driven through the desk API like
//! an agency would. Measures the physical floor (fsync of the same disk) and every figure of
//! `docs/benchmarks.md`.

use std::io::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::cli::desk_client::{self, DeskClient};
use crate::cli::init::{InitOptions, NodePlan, init_network};
use crate::config::{ClientConfig, NodeConfig};
use crate::domain::identity::NodeCode;
use crate::domain::names::ShortName;
use crate::proto::{
    GetQueueRequest, ListInboxRequest, MessageState, Precedence, RequestType, SubmitRequest, WatchRequest,
};
use crate::store::{Listing, Store, StoreError};

/// How long any phase may take before the bench gives up.
const PHASE_DEADLINE: Duration = Duration::from_secs(300);

/// Bench options.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Messages per throughput phase (and the backlog size).
    pub messages: usize,
    /// Concurrent `Submit` calls in the throughput phases.
    pub concurrency: usize,
    /// Body size in bytes.
    pub size: usize,
    /// Precedence of every message.
    pub precedence: Precedence,
    /// Messages in each latency phase (concurrency 1).
    pub latency_samples: usize,
    /// Keep the temp dir (both nodes' stores, configs and logs) and report its path.
    pub keep: bool,
    /// After the run, fill FR's store to this many inbound messages and time its start-up.
    pub startup_messages: Option<usize>,
    /// Then this many Submits to VN with checkpoints held off, SIGKILL, and VN's start-up timed
    /// (it replays them from the log); 0 skips it.
    pub recovery_writes: usize,
    /// With FR up, one attachment of this many MiB end to end, beside the disk's sequential
    /// write speed; 0 skips it.
    pub attachment_mib: usize,
}

/// The bench failed to run (not: a target was missed).
#[derive(Debug, thiserror::Error)]
#[error("bench: {0}")]
pub struct BenchError(String);

pub(super) fn fail(error: impl std::fmt::Display) -> BenchError {
    BenchError(error.to_string())
}

/// Latency percentiles in milliseconds.
pub(super) fn percentiles(samples: &mut [Duration]) -> Value {
    samples.sort();
    let at = |q: f64| {
        let index = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples.get(index).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    json!({ "p50_ms": at(0.5), "p99_ms": at(0.99), "max_ms": at(1.0), "samples": samples.len() })
}

/// Sequential write of `mib` MiB to a file on the bench's disk, synced: MiB/s.
fn disk_sequential_write(dir: &Path, mib: usize) -> Result<f64, BenchError> {
    let path = dir.join("sequential-probe");
    let block = vec![0xa5_u8; 1 << 20];
    let started = Instant::now();
    let mut file = std::fs::File::create(&path).map_err(fail)?;
    for _ in 0..mib {
        file.write_all(&block).map_err(fail)?;
    }
    file.sync_all().map_err(fail)?;
    let seconds = started.elapsed().as_secs_f64();
    std::fs::remove_file(&path).map_err(fail)?;
    Ok(mib as f64 / seconds.max(f64::EPSILON))
}

/// One attachment of `mib` MiB from VN to FR: uploaded, listed by a request, pushed before it,
/// receipted. Its MiB/s from the upload's start to DELIVERED, and the disk's sequential write
/// speed (both ends write the content once, synced, on this one disk).
async fn attachment_end_to_end(vn: &mut DeskClient, dir: &Path, mib: usize) -> Result<Value, BenchError> {
    let disk = disk_sequential_write(dir, mib)?;
    let content: Vec<u8> = (0..mib << 20).map(|i| (i % 251) as u8).collect();
    let started = Instant::now();
    let attachment = desk_client::upload_attachment(vn, "bench.bin", "application/octet-stream", content)
        .await
        .map_err(fail)?;
    let uploaded = started.elapsed();
    let request = SubmitRequest {
        attachments: vec![attachment],
        ..request(&BenchOptions { size: 0, ..bench_defaults() }, 0)
    };
    let message = vn.submit(request).await.map_err(fail)?.into_inner().message.unwrap_or_default();
    let id = message.envelope.map(|e| e.id).unwrap_or_default();
    desk_client::wait_for_state(vn, &id, MessageState::Delivered, PHASE_DEADLINE).await.map_err(fail)?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(json!({
        "mib": mib,
        "seconds": seconds,
        "upload_seconds": uploaded.as_secs_f64(),
        "mib_per_s": mib as f64 / seconds.max(f64::EPSILON),
        "disk_sequential_write_mib_per_s": disk,
    }))
}

/// Options for building one request outside the throughput phases.
fn bench_defaults() -> BenchOptions {
    BenchOptions {
        messages: 0,
        concurrency: 1,
        size: 0,
        precedence: Precedence::Routine,
        latency_samples: 0,
        keep: false,
        startup_messages: None,
        recovery_writes: 0,
        attachment_mib: 0,
    }
}

/// fsync of a small append on the bench's own disk: the physical floor of "stored".
fn fsync_floor(dir: &Path, samples: usize) -> Result<Value, BenchError> {
    let mut file = std::fs::File::create(dir.join("fsync-probe")).map_err(fail)?;
    let block = vec![0x5a_u8; 1024];
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples {
        let started = Instant::now();
        file.write_all(&block).map_err(fail)?;
        file.sync_data().map_err(fail)?;
        times.push(started.elapsed());
    }
    Ok(percentiles(&mut times))
}

/// A node running as a child process of the bench; killed when dropped.
pub(super) struct NodeProcess {
    child: Child,
}

impl NodeProcess {
    /// Starts `hanoi247 node --config <config>`, its stderr into `log`.
    pub(super) fn start(config: &Path, log: &Path) -> Result<Self, BenchError> {
        let exe = std::env::current_exe().map_err(fail)?;
        let log = std::fs::File::create(log).map_err(fail)?;
        let child = Command::new(exe)
            .args(["node", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(fail)?;
        Ok(Self { child })
    }

    /// Peak resident memory (VmHWM) in MiB.
    pub(super) fn peak_rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1024.0)
    }

    /// CPU time (user + system) the process has used so far, from `/proc/<pid>/stat`.
    pub(super) fn cpu(&self) -> Duration {
        cpu_time(self.child.id())
    }

    /// The process id.
    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM without waiting (many nodes stop at once; [`Self::wait`] then).
    pub(super) fn terminate(&self) -> Result<(), BenchError> {
        Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().map_err(fail)?;
        Ok(())
    }

    /// Waits for the process to exit.
    pub(super) fn wait(mut self) -> Result<(), BenchError> {
        self.child.wait().map_err(fail)?;
        Ok(())
    }

    /// SIGTERM and wait: a graceful stop.
    pub(super) fn stop(mut self) -> Result<(), BenchError> {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().map_err(fail)?;
        self.child.wait().map_err(fail)?;
        Ok(())
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU time (user + system) of process `pid` so far; zero when it cannot be read.
pub(super) fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces, so split after its closing paren):
    // state is field 3, utime field 14 and stime field 15, in clock ticks.
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    // SAFETY: sysconf takes no pointers and only reads a constant of the running system.
    let per_second = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap_or(100).max(1);
    let total = ticks(11) + ticks(12);
    Duration::from_micros(total * 1_000_000 / per_second)
}

/// CPU microseconds per message between two readings.
fn cpu_per_message(before: Duration, after: Duration, messages: usize) -> f64 {
    after.saturating_sub(before).as_secs_f64() * 1e6 / messages.max(1) as f64
}

pub(super) async fn ready(desk: &mut DeskClient) -> Result<Duration, BenchError> {
    let started = Instant::now();
    loop {
        if desk.list_inbox(ListInboxRequest { limit: 1, ..Default::default() }).await.is_ok() {
            return Ok(started.elapsed());
        }
        if started.elapsed() > PHASE_DEADLINE {
            return Err(fail("a node did not become ready"));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn request(options: &BenchOptions, i: usize) -> SubmitRequest {
    SubmitRequest {
        destination: "FR".into(),
        request_type: RequestType::TechnicalAdvice as i32,
        precedence: options.precedence as i32,
        subject: format!("bench {i}"),
        body: "x".repeat(options.size),
        ..Default::default()
    }
}

pub(super) fn bar(length: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(length as u64).with_message(what.to_owned());
    if let Ok(style) = ProgressStyle::with_template("{msg:<40} {bar:30} {pos}/{len} {elapsed}") {
        bar.set_style(style);
    }
    bar
}

/// Submits `count` messages with `concurrency` in flight; returns the elapsed time.
async fn submit_many(
    client: &DeskClient,
    options: &BenchOptions,
    count: usize,
    concurrency: usize,
    what: &str,
) -> Result<Duration, BenchError> {
    let progress = bar(count, what);
    let permits = Arc::new(Semaphore::new(concurrency));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        let permit = Arc::clone(&permits).acquire_owned().await.map_err(fail)?;
        let (mut client, request, progress) = (client.clone(), request(options, i), progress.clone());
        tasks.push(tokio::spawn(async move {
            let result = client.submit(request).await;
            drop(permit);
            progress.inc(1);
            result.map(|_| ())
        }));
    }
    for task in tasks {
        task.await.map_err(fail)?.map_err(fail)?;
    }
    progress.finish_and_clear();
    Ok(started.elapsed())
}

/// What a call costs with nothing behind it: `Health/Check` on VN's desk listener over mTLS,
/// `latency_samples` at concurrency 1 (latency) and `messages` at `concurrency` (rate, and the
/// CPU per call of VN and of the bench's own client). The floor under every `Submit` figure.
async fn call_floor(
    channel: &tonic::transport::Channel,
    vn: &NodeProcess,
    options: &BenchOptions,
) -> Result<Value, BenchError> {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let client = HealthClient::new(channel.clone());
    let check = |mut client: HealthClient<tonic::transport::Channel>| async move {
        client.check(HealthCheckRequest::default()).await.map(drop).map_err(fail)
    };
    let vn_cpu = vn.cpu();
    let mut latencies = Vec::with_capacity(options.latency_samples);
    for _ in 0..options.latency_samples {
        let started = Instant::now();
        check(client.clone()).await?;
        latencies.push(started.elapsed());
    }
    let sequential_cpu = cpu_per_message(vn_cpu, vn.cpu(), options.latency_samples);
    let permits = Arc::new(Semaphore::new(options.concurrency));
    let (vn_cpu, client_cpu) = (vn.cpu(), cpu_time(std::process::id()));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(options.messages);
    for _ in 0..options.messages {
        let permit = Arc::clone(&permits).acquire_owned().await.map_err(fail)?;
        let call = check(client.clone());
        tasks.push(tokio::spawn(async move {
            let result = call.await;
            drop(permit);
            result
        }));
    }
    for task in tasks {
        task.await.map_err(fail)??;
    }
    let rate = options.messages as f64 / started.elapsed().as_secs_f64();
    Ok(json!({
        "sequential": percentiles(&mut latencies),
        "sequential_vn_cpu_us": sequential_cpu,
        "rate_per_s": rate,
        "vn_cpu_us": cpu_per_message(vn_cpu, vn.cpu(), options.messages),
        "client_cpu_us": cpu_per_message(client_cpu, cpu_time(std::process::id()), options.messages),
    }))
}

/// Waits until VN's queue to FR is empty; returns how long it took.
async fn drained(operator: &mut DeskClient) -> Result<Duration, BenchError> {
    let started = Instant::now();
    loop {
        let queue = operator.get_queue(GetQueueRequest {}).await.map_err(fail)?.into_inner();
        let waiting: u32 = queue.peers.iter().map(|q| q.flash + q.immediate + q.priority + q.routine).sum();
        if waiting == 0 {
            return Ok(started.elapsed());
        }
        if started.elapsed() > PHASE_DEADLINE {
            return Err(fail(format!("{waiting} messages still queued after {PHASE_DEADLINE:?}")));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The store's (log syncs, keys written) so far, from a node's metrics listener.
fn store_counts(metrics_port: u16) -> (f64, f64) {
    use std::io::Read as _;
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", metrics_port)) else {
        return (f64::NAN, f64::NAN);
    };
    let _ = write!(stream, "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n");
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    // A sample line reads `hanoi247_store_flushes_total{} 51`.
    let sample = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim_start_matches("{}").trim().parse().ok())
            .unwrap_or(f64::NAN)
    };
    (sample("hanoi247_store_flushes_total"), sample("hanoi247_store_keys_written_total"))
}

async fn free_port() -> Result<u16, BenchError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(fail)?;
    Ok(listener.local_addr().map_err(fail)?.port())
}

/// Inbound requests added per store write when filling a store for the start-up figure.
const FILL_STEP: usize = 1000;

/// Adds `count` inbound requests to the store in `data_dir` (offline: no node runs on it):
/// copies of its newest inbox entry under new ids, each with its event and audit record as a
/// real arrival has, [`FILL_STEP`] per write, then made durable.
async fn fill_inbox(data_dir: &Path, count: usize) -> Result<(), BenchError> {
    let store = Store::open(data_dir).map_err(fail)?;
    let progress = bar(count, "Filling FR's store");
    let (filler, filled) = (store.clone(), progress.clone());
    tokio::task::spawn_blocking(move || -> Result<(), BenchError> {
        let template = filler.list(Listing::Inbox, 1, |_| true).map_err(fail)?.pop();
        let template = template.ok_or_else(|| fail("FR received nothing to copy"))?;
        let mut left = count;
        while left > 0 {
            let step = left.min(FILL_STEP);
            filler
                .write(|changes| {
                    for _ in 0..step {
                        let mut copy = template.clone();
                        if let Some(envelope) = copy.message.as_mut().and_then(|m| m.envelope.as_mut()) {
                            envelope.id = uuid::Uuid::now_v7().to_string();
                        }
                        copy.seq = changes.next_seq()?;
                        changes.put(copy)?;
                    }
                    Ok::<_, StoreError>(())
                })
                .map_err(fail)?;
            left -= step;
            filled.inc(step as u64);
        }
        Ok(())
    })
    .await
    .map_err(fail)??;
    store.persist().await.map_err(fail)?;
    progress.finish_and_clear();
    Ok(())
}

/// Runs the bench and returns every figure as JSON.
pub async fn run(options: BenchOptions) -> Result<Value, BenchError> {
    let dir = tempfile::tempdir().map_err(fail)?;
    let floor = fsync_floor(dir.path(), 1000)?;

    let mut plans = Vec::new();
    for code in ["VN", "FR"] {
        let code: NodeCode = code.parse().map_err(fail)?;
        plans.push(NodePlan {
            code,
            peer_port: free_port().await?,
            desk_port: free_port().await?,
            metrics_port: free_port().await?,
            console_port: free_port().await?,
        });
    }
    let init = InitOptions {
        out: dir.path().join("net"),
        network: "hanoi247-bench".into(),
        nodes: plans.clone(),
        clients: Vec::new(),
    };
    let report = init_network(&init).map_err(fail)?;
    for (_, path) in &report.node_configs {
        // A receiver that comes back should be found within a second, not after a minute of backoff.
        let text =
            std::fs::read_to_string(path).map_err(fail)?.replace("retry_max = \"60s\"", "retry_max = \"1s\"");
        // The bench measures the node, not the per-client call rate that protects it.
        let text = text.replace(
            "[deadlines]\n",
            "[limits]\ndesk_calls_per_second = 1000000\ndesk_call_burst = 1000000\n\n[deadlines]\n",
        );
        std::fs::write(path, text).map_err(fail)?;
    }
    let config_of = |code: &str| {
        report
            .node_config(code.parse().unwrap_or_else(|_| unreachable!("valid code literal")))
            .map(Path::to_owned)
    };
    let (vn_config, fr_config) =
        (config_of("VN").ok_or_else(|| fail("no VN"))?, config_of("FR").ok_or_else(|| fail("no FR"))?);
    let client = |code: &str, name: &str| -> Result<DeskClient, BenchError> {
        let code: NodeCode = code.parse().map_err(fail)?;
        let path = report.client_config_named(code, name).ok_or_else(|| fail("no client config"))?;
        desk_client::connect(&ClientConfig::load(path).map_err(fail)?).map_err(fail)
    };
    let vn_metrics = NodeConfig::load(&vn_config).map_err(fail)?.metrics.listen.port();
    let log = |name: &str| dir.path().join(format!("{name}.log"));

    let vn = NodeProcess::start(&vn_config, &log("vn"))?;
    let mut vn_desk = client("VN", "officer")?;
    let mut vn_operator = client("VN", "operator")?;
    ready(&mut vn_desk).await?;

    // 0. The edge alone: `grpc.health.v1.Health/Check` on the desk listener, the same mTLS
    //    channel and the same concurrencies, with no store, signature or desk check behind it.
    let floor_channel = desk_client::channel(
        &ClientConfig::load(
            report
                .client_config_named("VN".parse().map_err(fail)?, "officer")
                .ok_or_else(|| fail("no client config"))?,
        )
        .map_err(fail)?,
    )
    .map_err(fail)?;
    let call_floor = call_floor(&floor_channel, &vn, &options).await?;

    // 1. Submit → stored, one durable hop, concurrency 1 (FR is down, so VN only stores).
    let vn_cpu = vn.cpu();
    let mut stored = Vec::with_capacity(options.latency_samples);
    let progress = bar(options.latency_samples, "Submit → stored, concurrency 1");
    for i in 0..options.latency_samples {
        let started = Instant::now();
        vn_desk.submit(request(&options, i)).await.map_err(fail)?;
        stored.push(started.elapsed());
        progress.inc(1);
    }
    progress.finish_and_clear();
    let stored_latency = percentiles(&mut stored);
    let stored_cpu = cpu_per_message(vn_cpu, vn.cpu(), options.latency_samples);

    // 2. Submit throughput with the destination down, and flushes per message.
    let before = tokio::task::spawn_blocking(move || store_counts(vn_metrics)).await.map_err(fail)?;
    let (vn_cpu, client_cpu) = (vn.cpu(), cpu_time(std::process::id()));
    let elapsed =
        submit_many(&vn_desk, &options, options.messages, options.concurrency, "Submit throughput, FR down")
            .await?;
    let after = tokio::task::spawn_blocking(move || store_counts(vn_metrics)).await.map_err(fail)?;
    let submit_rate = options.messages as f64 / elapsed.as_secs_f64();
    let submit_cpu = cpu_per_message(vn_cpu, vn.cpu(), options.messages);
    let submit_client_cpu = cpu_per_message(client_cpu, cpu_time(std::process::id()), options.messages);
    let flushes_per_message = (after.0 - before.0) / options.messages as f64;
    let keys_per_message = (after.1 - before.1) / options.messages as f64;

    // 3. The backlog drains when FR starts.
    let backlog = options.messages + options.latency_samples;
    let vn_cpu = vn.cpu();
    let fr = NodeProcess::start(&fr_config, &log("fr"))?;
    let started = Instant::now();
    let mut fr_desk = client("FR", "officer")?;
    ready(&mut fr_desk).await?;
    drained(&mut vn_operator).await?;
    let drain = started.elapsed();
    let drain_cpu =
        (cpu_per_message(vn_cpu, vn.cpu(), backlog), cpu_per_message(Duration::ZERO, fr.cpu(), backlog));

    // 4. FR's start-up with that many messages stored.
    fr.stop()?;
    let fr = NodeProcess::start(&fr_config, &log("fr-restart"))?;
    let startup = ready(&mut fr_desk).await?;

    // 5. Submit → receipt, two durable hops, concurrency 1: from the call to the DELIVERED event.
    let mut events = vn_desk.watch(WatchRequest { after_sequence: None }).await.map_err(fail)?.into_inner();
    let (vn_cpu, fr_cpu) = (vn.cpu(), fr.cpu());
    let mut receipt = Vec::with_capacity(options.latency_samples);
    let progress = bar(options.latency_samples, "Submit → receipt, concurrency 1");
    for i in 0..options.latency_samples {
        let started = Instant::now();
        let message = vn_desk
            .submit(request(&options, i))
            .await
            .map_err(fail)?
            .into_inner()
            .message
            .unwrap_or_default();
        let id = message.envelope.map(|e| e.id).unwrap_or_default();
        loop {
            let event =
                tokio::time::timeout(PHASE_DEADLINE, events.message()).await.map_err(fail)?.map_err(fail)?;
            let event = event.ok_or_else(|| fail("watch ended"))?;
            if event.message_id == id && event.state() == MessageState::Delivered {
                break;
            }
        }
        receipt.push(started.elapsed());
        progress.inc(1);
    }
    progress.finish_and_clear();
    // Stop watching: an unread stream would only fill buffers during the next phase.
    drop(events);
    let receipt_latency = percentiles(&mut receipt);
    let receipt_cpu = (
        cpu_per_message(vn_cpu, vn.cpu(), options.latency_samples),
        cpu_per_message(fr_cpu, fr.cpu(), options.latency_samples),
    );

    // 6. Sustained end-to-end: submit N at concurrency C with FR up, until all are delivered.
    let (vn_cpu, fr_cpu) = (vn.cpu(), fr.cpu());
    let started = Instant::now();
    submit_many(&vn_desk, &options, options.messages, options.concurrency, "End to end, FR up").await?;
    drained(&mut vn_operator).await?;
    let sustained = options.messages as f64 / started.elapsed().as_secs_f64();
    let sustained_cpu = (
        cpu_per_message(vn_cpu, vn.cpu(), options.messages),
        cpu_per_message(fr_cpu, fr.cpu(), options.messages),
    );

    // 6b. One attachment end to end (uploaded, pushed to FR, receipted), beside the disk.
    let attachment = match options.attachment_mib {
        0 => None,
        mib => Some(attachment_end_to_end(&mut vn_desk, dir.path(), mib).await?),
    };

    let (vn_rss, fr_rss) = (vn.peak_rss_mib(), fr.peak_rss_mib());
    vn.stop()?;
    fr.stop()?;

    // 7. On request: FR's start-up with a much larger store, filled offline with copies (new ids)
    //    of a request it received. It is started once (to settle the store and release the
    //    directory lock of the filling process), stopped, and the second start is timed.
    let received = 2 * (options.messages + options.latency_samples);
    let large_startup = match options.startup_messages {
        Some(total) if total > received => {
            let fr_data = NodeConfig::load(&fr_config).map_err(fail)?.data_dir;
            fill_inbox(&fr_data, total - received).await?;
            let settling = NodeProcess::start(&fr_config, &log("fr-filled"))?;
            ready(&mut fr_desk).await?;
            settling.stop()?;
            let fr = NodeProcess::start(&fr_config, &log("fr-large"))?;
            let startup = ready(&mut fr_desk).await?;
            let rss = fr.peak_rss_mib();
            fr.stop()?;
            Some(json!({ "messages": total, "seconds": startup.as_secs_f64(), "peak_rss_mib": rss }))
        }
        _ => None,
    };
    // 8. Start-up after SIGKILL with `recovery_writes` writes in the log since the last
    //    checkpoint: VN runs with checkpoints held off (FR down), is killed, and its next start,
    //    which replays them all, is timed.
    let recovery = match options.recovery_writes {
        0 => None,
        writes => {
            let normal = std::fs::read_to_string(&vn_config).map_err(fail)?;
            let held_off = normal.replace("checkpoint_interval = \"2s\"", "checkpoint_interval = \"24h\"");
            if held_off == normal {
                return Err(fail(
                    "VN's config has no checkpoint_interval = \"2s\" line to hold checkpoints off",
                ));
            }
            std::fs::write(&vn_config, held_off).map_err(fail)?;
            let vn = NodeProcess::start(&vn_config, &log("vn-uncheckpointed"))?;
            ready(&mut vn_desk).await?;
            submit_many(&vn_desk, &options, writes, options.concurrency, "Log writes before SIGKILL").await?;
            // Dropping kills it with SIGKILL: no checkpoint, no clean close.
            drop(vn);
            std::fs::write(&vn_config, normal).map_err(fail)?;
            let vn = NodeProcess::start(&vn_config, &log("vn-recovered"))?;
            let startup = ready(&mut vn_desk).await?;
            let rss = vn.peak_rss_mib();
            vn.stop()?;
            Some(json!({ "log_writes": writes, "seconds": startup.as_secs_f64(), "peak_rss_mib": rss }))
        }
    };
    let kept = options.keep.then(|| dir.keep());
    Ok(json!({
        "kept_dir": kept,
        "receiver_startup_large": large_startup,
        "startup_after_sigkill": recovery,
        "options": {
            "messages": options.messages,
            "concurrency": options.concurrency,
            "size_bytes": options.size,
            "precedence": options.precedence.short_name(),
            "latency_samples": options.latency_samples,
        },
        "fsync_floor": floor,
        "attachment_end_to_end": attachment,
        "call_floor": call_floor,
        "submit_to_stored": stored_latency,
        "submit_throughput_destination_down_per_s": submit_rate,
        "store_flushes_per_message": flushes_per_message,
        "store_keys_per_message": keys_per_message,
        "backlog_messages": backlog,
        "backlog_drain_s": drain.as_secs_f64(),
        "receiver_startup_s": startup.as_secs_f64(),
        "receiver_stored_messages": backlog,
        "submit_to_receipt": receipt_latency,
        "sustained_end_to_end_per_s": sustained,
        "peak_rss_mib": { "VN": vn_rss, "FR": fr_rss },
        // User + system CPU of each node process over the phase, per message of the phase.
        "cpu_us_per_message": {
            "submit_to_stored": { "VN": stored_cpu },
            "submit_throughput_destination_down": { "VN": submit_cpu, "bench client": submit_client_cpu },
            "backlog_drain": { "VN": drain_cpu.0, "FR": drain_cpu.1 },
            "submit_to_receipt": { "VN": receipt_cpu.0, "FR": receipt_cpu.1 },
            "sustained_end_to_end": { "VN": sustained_cpu.0, "FR": sustained_cpu.1 },
        },
    }))
}

/// The figures as a table: each rate or latency with the CPU it cost per message at each node,
/// beside its target (`docs/benchmarks.md`).
pub fn table(report: &Value) -> String {
    let ms = |v: &Value| {
        format!(
            "p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms",
            v["p50_ms"].as_f64().unwrap_or(0.0),
            v["p99_ms"].as_f64().unwrap_or(0.0),
            v["max_ms"].as_f64().unwrap_or(0.0)
        )
    };
    let cpu = |phase: &str| {
        let of = |node: &str| report["cpu_us_per_message"][phase][node].as_f64();
        let nodes = match (of("VN"), of("FR")) {
            (Some(vn), Some(fr)) => format!("VN {vn:.0} + FR {fr:.0} µs"),
            (Some(vn), None) => format!("VN {vn:.0} µs"),
            _ => String::new(),
        };
        match of("bench client") {
            Some(client) => format!("{nodes} (client {client:.0} µs)"),
            None => nodes,
        }
    };
    let fsync_p50 = report["fsync_floor"]["p50_ms"].as_f64().unwrap_or(0.0);
    let options = &report["options"];
    let rate = |key: &str| {
        format!("{:.0} /s at concurrency {}", report[key].as_f64().unwrap_or(0.0), options["concurrency"])
    };
    let backlog_s = report["backlog_drain_s"].as_f64().unwrap_or(0.0);
    let backlog_rate = report["backlog_messages"].as_f64().unwrap_or(0.0) / backlog_s.max(f64::EPSILON);
    let mut rows = vec![
        ("fsync of a 1 KiB append (the floor)", ms(&report["fsync_floor"]), String::new(), String::new()),
        (
            "mTLS call with nothing behind, concurrency 1",
            ms(&report["call_floor"]["sequential"]),
            format!("VN {:.0} µs", report["call_floor"]["sequential_vn_cpu_us"].as_f64().unwrap_or(0.0)),
            "(the floor under Submit)".into(),
        ),
        (
            "mTLS call with nothing behind, throughput",
            format!(
                "{:.0} /s at concurrency {}",
                report["call_floor"]["rate_per_s"].as_f64().unwrap_or(0.0),
                options["concurrency"]
            ),
            format!(
                "VN {:.0} + client {:.0} µs",
                report["call_floor"]["vn_cpu_us"].as_f64().unwrap_or(0.0),
                report["call_floor"]["client_cpu_us"].as_f64().unwrap_or(0.0)
            ),
            String::new(),
        ),
        (
            "Submit → stored, concurrency 1",
            ms(&report["submit_to_stored"]),
            cpu("submit_to_stored"),
            "p50 ≤ 0.400 ms".into(),
        ),
        (
            "Submit throughput, destination down",
            rate("submit_throughput_destination_down_per_s"),
            cpu("submit_throughput_destination_down"),
            "≥ 6,000 /s at 64; CPU ≤ 1.3 × sled-floor wal".into(),
        ),
        (
            "store flushes (log syncs) per message",
            format!("{:.3}", report["store_flushes_per_message"].as_f64().unwrap_or(0.0)),
            String::new(),
            "≤ 0.2 at 64".into(),
        ),
        (
            "sled keys written per message",
            format!("{:.1}", report["store_keys_per_message"].as_f64().unwrap_or(0.0)),
            String::new(),
            "as few as the rules allow".into(),
        ),
        (
            "Submit → receipt, concurrency 1",
            ms(&report["submit_to_receipt"]),
            cpu("submit_to_receipt"),
            format!("p50 ≤ {:.3} ms (4 × fsync + 0.5)", 4.0 * fsync_p50 + 0.5),
        ),
        (
            "sustained end to end",
            rate("sustained_end_to_end_per_s"),
            cpu("sustained_end_to_end"),
            "≥ 3,000 /s at 64".into(),
        ),
        (
            "backlog drained after the receiver returns",
            format!("{backlog_s:.2} s for {} ({backlog_rate:.0} /s)", report["backlog_messages"]),
            cpu("backlog_drain"),
            "≥ 5,000 /s (100,000 in ≤ 20 s)".into(),
        ),
        (
            "receiver start-up to serving",
            format!(
                "{:.3} s with {} stored",
                report["receiver_startup_s"].as_f64().unwrap_or(0.0),
                report["receiver_stored_messages"]
            ),
            String::new(),
            "≤ 2 s".into(),
        ),
    ];
    if let Some(attachment) = report["attachment_end_to_end"].as_object() {
        rows.push((
            "attachment end to end (upload to receipt)",
            format!(
                "{:.1} MiB/s for {} MiB (disk sequential write {:.0} MiB/s)",
                attachment["mib_per_s"].as_f64().unwrap_or(0.0),
                attachment["mib"],
                attachment["disk_sequential_write_mib_per_s"].as_f64().unwrap_or(0.0)
            ),
            String::new(),
            String::new(),
        ));
    }
    if let Some(large) = report["receiver_startup_large"].as_object() {
        rows.push((
            "receiver start-up, large store",
            format!(
                "{:.3} s with {} stored (peak RSS {:.0} MiB)",
                large["seconds"].as_f64().unwrap_or(0.0),
                large["messages"],
                large["peak_rss_mib"].as_f64().unwrap_or(0.0)
            ),
            String::new(),
            "≤ 2 s, ≤ 200 MiB with 1,000,000".into(),
        ));
    }
    if let Some(recovery) = report["startup_after_sigkill"].as_object() {
        rows.push((
            "start-up after SIGKILL, log replayed",
            format!(
                "{:.3} s with {} writes since the checkpoint (peak RSS {:.0} MiB)",
                recovery["seconds"].as_f64().unwrap_or(0.0),
                recovery["log_writes"],
                recovery["peak_rss_mib"].as_f64().unwrap_or(0.0)
            ),
            String::new(),
            "≤ 2 s with 100,000".into(),
        ));
    }
    rows.push((
        "peak RSS",
        format!(
            "VN {:.0} MiB, FR {:.0} MiB",
            report["peak_rss_mib"]["VN"].as_f64().unwrap_or(0.0),
            report["peak_rss_mib"]["FR"].as_f64().unwrap_or(0.0)
        ),
        String::new(),
        "≤ 200 MiB per node".into(),
    ));
    let mut out = format!("{:<44} {:<52} {:<22} {}\n", "FIGURE", "MEASURED", "CPU PER MESSAGE", "TARGET");
    for (figure, measured, cpu, target) in rows {
        out.push_str(&format!("{figure:<44} {measured:<52} {cpu:<22} {target}\n"));
    }
    if let Some(kept) = report["kept_dir"].as_str() {
        out.push_str(&format!("\nkept: {kept} (node stores, configs and logs)\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_of_this_process_grows_with_work() {
        let before = cpu_time(std::process::id());
        // Bounded busy work: enough for several clock ticks on any machine.
        let started = Instant::now();
        let mut x = 0u64;
        while started.elapsed() < Duration::from_millis(200) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let after = cpu_time(std::process::id());
        assert!(after > before, "{before:?} -> {after:?}");
        assert_eq!(cpu_per_message(Duration::from_millis(10), Duration::from_millis(30), 100), 200.0);
    }

    #[test]
    fn the_table_shows_cpu_per_message_beside_each_rate() {
        let report = json!({
            "options": { "concurrency": 64 },
            "submit_throughput_destination_down_per_s": 2700.0,
            "cpu_us_per_message": {
                "submit_throughput_destination_down": { "VN": 412.4 },
                "sustained_end_to_end": { "VN": 350.0, "FR": 120.0 },
            },
        });
        let table = table(&report);
        let line = |start: &str| table.lines().find(|l| l.starts_with(start)).unwrap_or_default().to_owned();
        assert!(line("Submit throughput").contains("VN 412 µs"), "{table}");
        assert!(line("sustained end to end").contains("VN 350 + FR 120 µs"), "{table}");
    }
}
