//! Issue 4: nothing lost, nothing doubled, whatever the network and kill -9 do.
//!
//! Nodes run as child processes of the real binary; the peer connections between the senders
//! (VN, DE) and the receiver (FR), both ways, go through fault-injecting proxies
//! (`support::proxy`). Faults, kills and precedences come from a seed printed at the start:
//! replay a failure with `HANOI247_CHAOS_SEED=<seed>`. `HANOI247_CHAOS_MESSAGES` sets the size
//! (2,000 by default; `HANOI247_CHAOS_MESSAGES=100000 cargo test --release --test it chaos`
//! runs it long).

use std::collections::{BTreeMap, HashMap};
use std::fs::OpenOptions;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use hanoi247::cli::desk_client::{self, DeskClient};
use hanoi247::config::ClientConfig;
use hanoi247::proto::{
    AcknowledgeRequest, ConnectionState, Direction, EnvelopeKind, GetQueueRequest, GetRequest, GetResponse,
    ListInboxRequest, ListOutboxRequest, Message, MessageState, Precedence, WatchRequest, WatchResponse,
};
use hanoi247::rpc::desk_service::WATCH_AFTER_HEADER;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, timeout};

use crate::support::proxy::{Fault, Flow, Proxy, chaos_seed};
use crate::support::*;

const SENDERS: [&str; 2] = ["VN", "DE"];
const RECEIVER: &str = "FR";
const NODES: [&str; 3] = ["VN", "DE", "FR"];
const PRECEDENCES: [Precedence; 4] =
    [Precedence::Flash, Precedence::Immediate, Precedence::Priority, Precedence::Routine];
/// Concurrent desk clients submitting at each sender.
const SUBMITTERS_PER_SENDER: usize = 3;
/// Concurrent desk clients acknowledging at the receiver.
const ACKNOWLEDGERS: usize = 2;
/// Pause between attempts while a node is down, and between polls.
const POLL: Duration = Duration::from_millis(50);
/// No single desk call may take longer (a node killed mid-call answers with an error at once).
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// Peer call deadlines in the chaos network, so that black holes are given up on quickly.
const REQUEST_TIMEOUT: &str = "2s";
const CONNECT_TIMEOUT: &str = "1s";
/// Backoff bound in the chaos network: long enough that kills land while a peer's messages
/// wait for their next attempt (production's is a minute), short enough to settle quickly.
const CHAOS_RETRY_MAX: &str = "5s";
/// The most a listing returns (the desk's cap).
const LIST_CAP: u32 = 10_000;
/// How many violations are printed in full.
const SHOWN: usize = 30;

/// A seed that CI runs every time, beside a fresh random one, so a regression shows up on the
/// same faults run after run.
const FIXED_SEED: u64 = 6_970_885_335_545_291_938;

/// The chaos test with a fresh seed (or `HANOI247_CHAOS_SEED`) and `HANOI247_CHAOS_MESSAGES`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_nothing_lost_nothing_doubled() {
    let messages: usize = std::env::var("HANOI247_CHAOS_MESSAGES")
        .map(|text| text.trim().parse().expect("HANOI247_CHAOS_MESSAGES is a number"))
        .unwrap_or(2000);
    chaos_run(chaos_seed("chaos_nothing_lost_nothing_doubled"), messages).await;
}

/// The chaos test with the fixed seed, at the CI size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_nothing_lost_nothing_doubled_fixed_seed() {
    eprintln!("chaos_nothing_lost_nothing_doubled_fixed_seed: chaos seed {FIXED_SEED}");
    chaos_run(FIXED_SEED, 2000).await;
}

/// The chaos test: two senders, one receiver, acknowledgements back, kills and network faults.
async fn chaos_run(seed: u64, messages: usize) {
    let began = Instant::now();
    // Bounds: the chaos lasts while requests are being submitted, at most this long, with at
    // most this many kills and fault changes.
    let chaos_budget = Duration::from_millis(60_000 + 25 * messages as u64);
    // Submissions are paced so that the faults land among them: 2,000 take about half a
    // minute; long runs go as fast as the nodes take them.
    let pace = Duration::from_millis(30_000 + 2 * messages as u64).div_f64(messages.max(1) as f64);
    let max_kills = 12 + messages / 100;
    let max_changes = 60 + messages / 10;
    let settle_budget = Duration::from_millis(60_000 + 2 * messages as u64);

    let net = Network::new(&NODES).await;
    let mut proxies = Vec::new();
    for (from, to) in [("VN", "FR"), ("DE", "FR"), ("FR", "VN"), ("FR", "DE")] {
        let proxy = Proxy::start(peer_addr(&net, to)).await;
        route_through(&net, from, to, &proxy);
        proxies.push((format!("{from}->{to}"), proxy));
    }
    for node in NODES {
        shorten_timeouts(&net, node);
        net.edit_config(node, "retry_max = \"500ms\"", &format!("retry_max = \"{CHAOS_RETRY_MAX}\""));
    }
    let mut nodes = BTreeMap::new();
    for node in NODES {
        nodes.insert(node, start_node(&net, node).await);
    }
    let desks: HashMap<&str, Desk> = NODES.iter().map(|n| (*n, Desk::of(&net, n))).collect();

    // FR acknowledges every request as it arrives: a watcher feeds ids to the acknowledgers.
    let (stop, stopped) = watch::channel(false);
    let (ids, to_acknowledge) = mpsc::unbounded_channel();
    let to_acknowledge = Arc::new(tokio::sync::Mutex::new(to_acknowledge));
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let mut helpers = JoinSet::new();
    helpers.spawn(watch_received(desks[RECEIVER].clone(), ids, stopped.clone()));
    for _ in 0..ACKNOWLEDGERS {
        helpers.spawn(acknowledge(
            desks[RECEIVER].clone(),
            Arc::clone(&to_acknowledge),
            stopped.clone(),
            Arc::clone(&acknowledged),
        ));
    }

    // The senders submit until `messages` Submits returned OK.
    let remaining = Arc::new(AtomicUsize::new(messages));
    let submit_start = Instant::now();
    let submit_deadline = submit_start + chaos_budget + settle_budget;
    let mut submitters = JoinSet::new();
    for (s, sender) in SENDERS.into_iter().enumerate() {
        for k in 0..SUBMITTERS_PER_SENDER {
            let rng = fastrand::Rng::with_seed(seed.wrapping_add(1 + (s * SUBMITTERS_PER_SENDER + k) as u64));
            let submitter = Submitter {
                desk: desks[sender].clone(),
                sender,
                rng,
                remaining: Arc::clone(&remaining),
                messages,
                start: submit_start,
                pace,
                deadline: submit_deadline,
            };
            submitters.spawn(submitter.run());
        }
    }

    // Meanwhile: kills and faults at moments drawn from the seed.
    let mut rng = fastrand::Rng::with_seed(seed);
    let chaos_until = Instant::now() + chaos_budget;
    let mut journal = Vec::new();
    let mut kills: BTreeMap<&str, usize> = BTreeMap::new();
    let mut changes = 0;
    while remaining.load(Ordering::SeqCst) > 0 && Instant::now() < chaos_until {
        // A random moment (not a synchronisation: the faults are meant to land anywhere).
        sleep(Duration::from_millis(rng.u64(50..700))).await;
        let roll = rng.u8(0..100);
        let at = submit_start.elapsed().as_secs_f64();
        if roll < 20 && kills.values().sum::<usize>() < max_kills {
            let node = NODES[rng.usize(..NODES.len())];
            let down = Duration::from_millis(rng.u64(0..800));
            nodes.remove(node).expect("every node runs between steps").kill9();
            sleep(down).await;
            let restarting = Instant::now();
            nodes.insert(node, start_node(&net, node).await);
            let restart = restarting.elapsed();
            journal.push(format!("{at:8.3}s kill -9 {node}, down {down:?}, ready {restart:?} after restart"));
            *kills.entry(node).or_default() += 1;
        } else if changes < max_changes {
            let (name, proxy) = &proxies[rng.usize(..proxies.len())];
            let fault = if roll < 75 { Fault::random(&mut rng) } else { Fault::Pass };
            journal.push(format!("{at:8.3}s {name}: {fault:?}"));
            proxy.set(fault);
            changes += 1;
        }
    }
    let chaos_took = began.elapsed();
    // Faults stop: every proxy passes, every node runs.
    for (_, proxy) in &proxies {
        proxy.set(Fault::Pass);
    }
    let mut sent = Vec::new();
    let mut failed_submits = 0;
    while let Some(result) = submitters.join_next().await {
        let (mine, failed) = result.unwrap();
        sent.extend(mine);
        failed_submits += failed;
    }
    let submitted_took = began.elapsed();

    let mut violations = Violations::new(seed);
    if sent.len() < messages {
        violations.add(
            "every Submit is accepted once the node is up",
            format!("only {} of {messages} Submits returned OK before the deadline", sent.len()),
        );
    }

    // Settle: wait (with a deadline) until nothing waits anywhere and everything is acknowledged.
    let settle_until = Instant::now() + settle_budget;
    let mut clients: HashMap<&str, DeskClient> = NODES.iter().map(|n| (*n, desks[n].connect())).collect();
    let mut pending = unsettled(&mut clients).await;
    while let Some(what) = &pending {
        if Instant::now() >= settle_until {
            violations
                .add("the network settles once faults stop", format!("after {settle_budget:?}: {what}"));
            break;
        }
        sleep(POLL * 4).await;
        pending = unsettled(&mut clients).await;
    }
    let settled_took = began.elapsed();
    stop.send_replace(true);
    while let Some(result) = helpers.join_next().await {
        result.unwrap();
    }

    // Check, from the nodes' own desk APIs.
    let report = check(&desks, &mut clients, &sent, submit_start, &mut violations).await;
    let checked_took = began.elapsed();

    eprintln!(
        "chaos seed {seed}: {} requests submitted OK ({failed_submits} Submit attempts failed), {} stored at FR \
         ({} whose Submit failed at the client), {} acknowledgements made; {} ROUTINE requests were \
         submitted while an earlier FLASH of their sender was on its way",
        sent.len(),
        report.received,
        report.extras,
        acknowledged.load(Ordering::SeqCst),
        report.contested,
    );
    eprintln!(
        "chaos: {} kills ({kills:?}), {changes} fault changes; chaos {:.1}s, all submitted {:.1}s, \
         settled {:.1}s, checked {:.1}s",
        kills.values().sum::<usize>(),
        chaos_took.as_secs_f64(),
        submitted_took.as_secs_f64(),
        settled_took.as_secs_f64(),
        checked_took.as_secs_f64(),
    );
    for (name, proxy) in &proxies {
        eprintln!("proxy {name}: {}", proxy.stats().summary());
    }
    if !violations.is_empty() {
        eprintln!("chaos journal (seed {seed}):");
        for line in &journal {
            eprintln!("  {line}");
        }
        drop(nodes);
        // Keep the stores and logs for the post-mortem.
        let kept = net.dir().to_owned();
        std::mem::forget(net);
        eprintln!("chaos: stores and node logs kept in {}", kept.display());
    }
    violations.finish();
}

/// One black-holed peer, one healthy peer: the healthy one flows; the hung one is given up on
/// by deadlines, waits visibly, and gets its message when the black hole is lifted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_a_black_holed_peer_does_not_hold_up_a_healthy_one() {
    let net = Network::new(&NODES).await;
    let proxy = Proxy::start(peer_addr(&net, "FR")).await;
    route_through(&net, "VN", "FR", &proxy);
    shorten_timeouts(&net, "VN");
    let _fr = start_node(&net, "FR").await;
    let _de = start_node(&net, "DE").await;
    let _vn = start_node(&net, "VN").await;
    let mut vn = net.desk("VN");

    // A first request goes through, so VN holds a live connection to FR when FR goes silent.
    let first = submit(&mut vn, advice_request("FR", Precedence::Routine, "before the black hole")).await;
    wait_state(&mut vn, &first, MessageState::Delivered).await;
    proxy.set(Fault::BlackHole);

    let to_fr = submit(&mut vn, preservation_request("FR")).await;
    let started = Instant::now();
    let to_de = submit(&mut vn, advice_request("DE", Precedence::Routine, "to the healthy peer")).await;
    wait_state(&mut vn, &to_de, MessageState::Delivered).await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "DE's request waited {took:?} behind the black hole");

    // FR's waits, with an error saying the call timed out (the live connection's call, then the
    // handshakes into the black hole), and is retried.
    let waiting = wait_state(&mut vn, &to_fr, MessageState::WaitingRetry).await;
    assert!(is_timeout(&waiting.last_error), "last error: {}", waiting.last_error);
    assert!(waiting.attempts >= 1);
    assert!(waiting.next_attempt_at.is_some());
    let deadline = Instant::now() + DEADLINE;
    loop {
        let message = get(&mut vn, &to_fr).await.message.unwrap();
        assert_eq!(message.state(), MessageState::WaitingRetry, "nothing gets through a black hole");
        if message.attempts >= 3 {
            assert!(is_timeout(&message.last_error), "last error: {}", message.last_error);
            break;
        }
        assert!(Instant::now() < deadline, "VN stopped retrying FR: {message:?}");
        sleep(POLL).await;
    }
    // Another request to DE still goes straight through.
    let started = Instant::now();
    let again = submit(&mut vn, advice_request("DE", Precedence::Flash, "still flowing")).await;
    wait_state(&mut vn, &again, MessageState::Delivered).await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "DE's second request waited {took:?}");

    // Operators see it: FR failing with the timeout, DE connected, FR's request waiting.
    let mut operator = net.desk_as("VN", "operator");
    let queue = operator.get_queue(GetQueueRequest {}).await.unwrap().into_inner().peers;
    let fr = queue.iter().find(|p| p.peer == "FR").unwrap();
    assert_eq!(fr.connection(), ConnectionState::Failing);
    assert!(is_timeout(&fr.last_error), "{}", fr.last_error);
    assert_eq!(fr.flash, 1);
    let de = queue.iter().find(|p| p.peer == "DE").unwrap();
    assert_eq!(de.connection(), ConnectionState::Connected);
    assert_eq!(de.flash + de.immediate + de.priority + de.routine, 0);
    let stats = proxy.stats();
    assert!(stats.silenced.load(Ordering::SeqCst) >= 1, "{}", stats.summary());

    let mut fr_desk = net.desk("FR");
    assert_eq!(ids(&inbox(&mut fr_desk).await), vec![first.clone()]);
    let mut de_desk = net.desk("DE");
    assert_eq!(ids(&inbox(&mut de_desk).await), vec![again.clone(), to_de.clone()]);

    // The black hole is lifted: FR's request arrives, once.
    proxy.set(Fault::Pass);
    let delivered = wait_state(&mut vn, &to_fr, MessageState::Delivered).await;
    assert!(!delivered.last_error.is_empty(), "the last error stays for the record");
    assert_eq!(ids(&inbox(&mut fr_desk).await), vec![to_fr, first]);
    assert_eq!(ids(&inbox(&mut de_desk).await), vec![again, to_de]);
}

/// Guarantee 4 across a crash: a FLASH request that failed and waits for its next attempt when
/// the sender is killed must still go before a ROUTINE request queued after the restart.
/// (What the chaos test found: the restarted delivery task forgets the peer's backoff but each
/// message keeps its `next_attempt_at`, so newer requests overtook the ones that had been tried.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_a_flash_request_keeps_its_place_after_a_restart_during_backoff() {
    // The retry delay is random (equal jitter, at least half the bound): make sure the FLASH request still has a while to
    // wait after the restart, trying again in a fresh network in the rare case it does not.
    for _ in 0..5 {
        let net = Network::new(&["VN", "FR"]).await;
        net.edit_config("VN", "retry_initial = \"100ms\"", "retry_initial = \"20s\"");
        net.edit_config("VN", "retry_max = \"500ms\"", "retry_max = \"20s\"");
        let vn_process = start_node(&net, "VN").await;
        let mut vn = net.desk("VN");
        // FR is down: the FLASH request fails and waits for its next attempt.
        let flash = submit(&mut vn, advice_request("FR", Precedence::Flash, "flash")).await;
        wait_state(&mut vn, &flash, MessageState::WaitingRetry).await;
        vn_process.kill9();
        let _vn = start_node(&net, "VN").await;
        let mut vn = net.desk("VN");
        let waiting = get(&mut vn, &flash).await.message.unwrap();
        let next = hanoi247::domain::timestamp::to_system(&waiting.next_attempt_at.unwrap());
        if next < SystemTime::now() + Duration::from_secs(3) {
            continue;
        }

        let _fr = start_node(&net, "FR").await;
        let routine = submit(&mut vn, advice_request("FR", Precedence::Routine, "routine")).await;
        wait_state(&mut vn, &routine, MessageState::Delivered).await;
        wait_state(&mut vn, &flash, MessageState::Delivered).await;
        let mut fr = net.desk("FR");
        let flash_at_vn = get(&mut vn, &flash).await.message.unwrap();
        // Newest first: the FLASH request must have been stored first.
        assert_eq!(
            ids(&inbox(&mut fr).await),
            vec![routine, flash],
            "the ROUTINE request queued after the restart reached FR before the FLASH request; \
             the FLASH request's timeline at VN:\n{}",
            timeline(&flash_at_vn)
        );
        return;
    }
    panic!("the FLASH request's retry was never far enough ahead to test the restart");
}

/// The proxy itself, against a plain TCP echo server: each fault does what it says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_proxy_injects_each_fault() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = echo.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = echo.accept().await.unwrap();
            tokio::spawn(async move {
                let (mut read, mut write) = socket.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    let proxy = Proxy::start(target).await;
    let quiet = Duration::from_millis(300);

    // Pass: echoed.
    let mut socket = TcpStream::connect(proxy.addr()).await.unwrap();
    socket.write_all(b"hello").await.unwrap();
    let mut buffer = [0u8; 5];
    socket.read_exact(&mut buffer).await.unwrap();
    assert_eq!(&buffer, b"hello");

    // Delay: the live connection slows down but still works.
    proxy.set(Fault::Delay(Duration::from_millis(100)));
    let started = Instant::now();
    socket.write_all(b"again").await.unwrap();
    socket.read_exact(&mut buffer).await.unwrap();
    assert_eq!(&buffer, b"again");
    assert!(started.elapsed() >= Duration::from_millis(200), "delayed both ways");

    // BlackHole: the live connection goes silent and stays open.
    proxy.set(Fault::BlackHole);
    socket.write_all(b"lost!").await.unwrap();
    assert!(timeout(quiet, socket.read(&mut buffer)).await.is_err(), "a black hole never answers");
    // ... and so does a new one.
    let mut fresh = TcpStream::connect(proxy.addr()).await.unwrap();
    fresh.write_all(b"hello").await.unwrap();
    assert!(timeout(quiet, fresh.read(&mut buffer)).await.is_err(), "a black hole never answers");

    // Lifting it cuts both, so that clients reconnect.
    proxy.set(Fault::Pass);
    assert_eq!(timeout(DEADLINE, socket.read(&mut buffer)).await.unwrap().unwrap_or(0), 0);
    assert_eq!(timeout(DEADLINE, fresh.read(&mut buffer)).await.unwrap().unwrap_or(0), 0);

    // Refuse: accepted, then closed at once.
    proxy.set(Fault::Refuse);
    let mut refused = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(timeout(DEADLINE, refused.read(&mut buffer)).await.unwrap().unwrap_or(0), 0);

    // CutAfter client to server: exactly that many bytes reach the server.
    proxy.set(Fault::CutAfter { bytes: 3, direction: Flow::ClientToServer });
    let mut cut = TcpStream::connect(proxy.addr()).await.unwrap();
    cut.write_all(b"hello").await.unwrap();
    let mut echoed = Vec::new();
    timeout(DEADLINE, cut.read_to_end(&mut echoed)).await.unwrap().unwrap_or(0);
    assert!(echoed.len() <= 3 && b"hel".starts_with(&echoed), "{echoed:?}");

    // CutAfter server to client: the response stops after that many bytes.
    proxy.set(Fault::CutAfter { bytes: 2, direction: Flow::ServerToClient });
    let mut cut = TcpStream::connect(proxy.addr()).await.unwrap();
    cut.write_all(b"hello").await.unwrap();
    let mut echoed = Vec::new();
    timeout(DEADLINE, cut.read_to_end(&mut echoed)).await.unwrap().unwrap_or(0);
    assert_eq!(echoed, b"he");

    // The counters saw it all.
    let stats = proxy.stats();
    assert_eq!(stats.refused.load(Ordering::SeqCst), 1, "{}", stats.summary());
    assert_eq!(stats.black_holed.load(Ordering::SeqCst), 1, "{}", stats.summary());
    assert_eq!(stats.silenced.load(Ordering::SeqCst), 1, "{}", stats.summary());
    assert_eq!(stats.cut_after_bytes.load(Ordering::SeqCst), 2, "{}", stats.summary());
}

// ---- the network --------------------------------------------------------------------------

/// Where `node`'s peer listener is.
fn peer_addr(net: &Network, node: &str) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], net.config(node).listen.peer.port()))
}

/// Points `node`'s directory entry for `peer` at `proxy`. The host stays 127.0.0.1, which the
/// peer's certificate names; only the port changes.
fn route_through(net: &Network, node: &str, peer: &str, proxy: &Proxy) {
    net.route_peer(node, peer, &format!("127.0.0.1:{}", proxy.port()));
}

/// Peer calls give up quickly, so that black holes cost seconds, not minutes.
fn shorten_timeouts(net: &Network, node: &str) {
    net.edit_config(node, "request_timeout = \"10s\"", &format!("request_timeout = \"{REQUEST_TIMEOUT}\""));
    net.edit_config(node, "connect_timeout = \"5s\"", &format!("connect_timeout = \"{CONNECT_TIMEOUT}\""));
}

/// Runs `node` as a child process of the real binary (like `Network::spawn`, but the log of
/// every run is kept, appended to `<node>.log`) and waits until its desk answers.
async fn start_node(net: &Network, node: &str) -> ChildNode {
    let log =
        OpenOptions::new().create(true).append(true).open(net.dir().join(format!("{node}.log"))).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_hanoi247"))
        .args(["node", "--config"])
        .arg(net.config_path(node))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut child = ChildNode { child };
    let mut desk = net.desk(node);
    let deadline = Instant::now() + DEADLINE;
    loop {
        let probe = desk.list_inbox(ListInboxRequest { limit: 1, ..Default::default() });
        if matches!(timeout(CALL_TIMEOUT, probe).await, Ok(Ok(_))) {
            return child;
        }
        if let Some(status) = child.child.try_wait().unwrap() {
            panic!("{node} exited with {status} before it was ready (see {node}.log)");
        }
        assert!(Instant::now() < deadline, "{node} not ready within {DEADLINE:?}");
        sleep(Duration::from_millis(20)).await;
    }
}

/// Makes desk clients of one node (for tasks that outlive a node's restarts).
#[derive(Clone)]
struct Desk {
    config: ClientConfig,
}

impl Desk {
    fn of(net: &Network, node: &str) -> Self {
        Self { config: ClientConfig::load(&net.client_config_path(node)).unwrap() }
    }

    /// A new client (connecting lazily) that accepts listings of any size.
    fn connect(&self) -> DeskClient {
        desk_client::connect(&self.config).unwrap().max_decoding_message_size(usize::MAX)
    }
}

// ---- the senders and the receiving desk ---------------------------------------------------

/// A request whose Submit returned OK.
struct Sent {
    id: String,
    sender: &'static str,
    precedence: Precedence,
    /// When its Submit was called, and when it returned.
    started: Instant,
    returned: Instant,
    /// When its Submit was called, by the wall clock (to compare with FR's event times).
    started_wall: SystemTime,
}

/// One desk client submitting requests to FR until the shared count is used up.
struct Submitter {
    desk: Desk,
    sender: &'static str,
    rng: fastrand::Rng,
    remaining: Arc<AtomicUsize>,
    /// The n-th request (of `messages`) is not submitted before `start + n * pace`.
    messages: usize,
    start: Instant,
    pace: Duration,
    deadline: Instant,
}

impl Submitter {
    /// The requests whose Submit returned OK, and how many attempts failed.
    async fn run(mut self) -> (Vec<Sent>, usize) {
        let mut client = self.desk.connect();
        let mut sent = Vec::new();
        let mut failed = 0;
        let take = |n: usize| n.checked_sub(1);
        while let Ok(left) = self.remaining.fetch_update(Ordering::SeqCst, Ordering::SeqCst, take) {
            let n = self.messages - left;
            tokio::time::sleep_until(self.start + self.pace.mul_f64(n as f64)).await;
            let precedence = PRECEDENCES[self.rng.usize(..PRECEDENCES.len())];
            loop {
                if Instant::now() >= self.deadline {
                    return (sent, failed);
                }
                let subject = format!("chaos {} {}", self.sender, sent.len());
                let request = advice_request(RECEIVER, precedence, &subject);
                let (started, started_wall) = (Instant::now(), SystemTime::now());
                match timeout(CALL_TIMEOUT, client.submit(request)).await {
                    Ok(Ok(response)) => {
                        let returned = Instant::now();
                        let message = response.into_inner().message.unwrap();
                        let id = message.envelope.unwrap().id;
                        let sender = self.sender;
                        sent.push(Sent { id, sender, precedence, started, returned, started_wall });
                        break;
                    }
                    // The node is down or being killed: whether it stored the request or not,
                    // this one does not count; try again with a new one.
                    _ => {
                        failed += 1;
                        client = self.desk.connect();
                        sleep(POLL).await;
                    }
                }
            }
        }
        (sent, failed)
    }
}

/// Follows FR's events (resuming after restarts) and passes on every newly received request.
async fn watch_received(desk: Desk, ids: mpsc::UnboundedSender<String>, mut stop: watch::Receiver<bool>) {
    let mut after = 0;
    loop {
        if *stop.borrow() {
            return;
        }
        let mut client = desk.connect();
        let call = timeout(CALL_TIMEOUT, client.watch(WatchRequest { after_sequence: Some(after) }));
        let opened = tokio::select! {
            _ = stop.changed() => return,
            opened = call => opened,
        };
        if let Ok(Ok(response)) = opened {
            let mut events = response.into_inner();
            loop {
                let item = tokio::select! {
                    _ = stop.changed() => return,
                    item = events.message() => item,
                };
                let Ok(Some(event)) = item else { break };
                after = event.sequence;
                if event.state() == MessageState::Received && !event.overdue {
                    let _ = ids.send(event.message_id);
                }
            }
        }
        tokio::select! {
            _ = stop.changed() => return,
            () = sleep(POLL) => {}
        }
    }
}

/// Acknowledges the received requests `ids` hands out, retrying while FR is down.
async fn acknowledge(
    desk: Desk,
    ids: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<String>>>,
    mut stop: watch::Receiver<bool>,
    acknowledged: Arc<AtomicUsize>,
) {
    let mut client = desk.connect();
    loop {
        let id = {
            let mut ids = ids.lock().await;
            tokio::select! {
                _ = stop.changed() => return,
                id = ids.recv() => match id {
                    Some(id) => id,
                    None => return,
                },
            }
        };
        loop {
            let request = AcknowledgeRequest { id: id.clone(), note: String::new() };
            match timeout(CALL_TIMEOUT, client.acknowledge(request)).await {
                Ok(Ok(_)) => {
                    acknowledged.fetch_add(1, Ordering::SeqCst);
                    break;
                }
                // Already acknowledged: an earlier call was stored, its answer lost in a kill.
                Ok(Err(status)) if status.code() == tonic::Code::FailedPrecondition => break,
                _ => {
                    if *stop.borrow() {
                        return;
                    }
                    client = desk.connect();
                    sleep(POLL).await;
                }
            }
        }
    }
}

/// What still keeps the network from having settled, if anything: a request not yet
/// acknowledged at its sender, an acknowledgement not yet delivered by FR, a request FR has not
/// acknowledged.
async fn unsettled(clients: &mut HashMap<&str, DeskClient>) -> Option<String> {
    for node in NODES {
        let waiting: &[MessageState] = if node == RECEIVER {
            &[MessageState::Queued, MessageState::WaitingRetry]
        } else {
            &[MessageState::Queued, MessageState::WaitingRetry, MessageState::Delivered]
        };
        let states = waiting.iter().map(|s| *s as i32).collect();
        let request = ListOutboxRequest { limit: 1, states, ..Default::default() };
        match clients.get_mut(node).unwrap().list_outbox(request).await {
            Ok(response) => {
                if let Some(message) = response.into_inner().messages.first() {
                    return Some(format!(
                        "{node}: {} is still {:?} ({} attempts, last error: {})",
                        id_of(message),
                        message.state(),
                        message.attempts,
                        message.last_error
                    ));
                }
            }
            Err(status) => return Some(format!("{node}: ListOutbox failed: {status}")),
        }
    }
    let request =
        ListInboxRequest { limit: 1, states: vec![MessageState::Received as i32], ..Default::default() };
    match clients.get_mut(RECEIVER).unwrap().list_inbox(request).await {
        Ok(response) => {
            if let Some(message) = response.into_inner().messages.first() {
                return Some(format!("{RECEIVER}: {} is not acknowledged yet", id_of(message)));
            }
        }
        Err(status) => return Some(format!("{RECEIVER}: ListInbox failed: {status}")),
    }
    None
}

// ---- the checks ---------------------------------------------------------------------------

/// What went wrong, in the order found; the first one names the first violated invariant.
struct Violations {
    seed: u64,
    /// The first one, in full.
    first: Option<String>,
    /// How many times each invariant was violated.
    count: BTreeMap<String, usize>,
}

impl Violations {
    fn new(seed: u64) -> Self {
        Self { seed, first: None, count: BTreeMap::new() }
    }

    fn add(&mut self, invariant: &str, detail: String) {
        if self.total() < SHOWN {
            eprintln!("VIOLATION ({invariant}): {detail}");
        }
        self.first.get_or_insert_with(|| format!("{invariant}: {detail}"));
        *self.count.entry(invariant.to_owned()).or_default() += 1;
    }

    fn total(&self) -> usize {
        self.count.values().sum()
    }

    fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    fn finish(self) {
        if let Some(first) = &self.first {
            for (invariant, count) in &self.count {
                eprintln!("{count} violation(s) of: {invariant}");
            }
            panic!(
                "chaos seed {} (replay with HANOI247_CHAOS_SEED={}): {} violation(s); first: {first}",
                self.seed,
                self.seed,
                self.total()
            );
        }
    }
}

/// Counts for the summary line.
struct Report {
    received: usize,
    extras: usize,
    /// ROUTINE requests submitted while an earlier FLASH of their sender was still on its way:
    /// the cases where the precedence check has teeth.
    contested: usize,
}

/// One message as `Get` shows it, reduced to what the checks need.
struct Seen {
    direction: Direction,
    state: MessageState,
    /// Its acknowledgement envelopes: id, direction, state.
    acknowledgements: Vec<(String, Direction, MessageState)>,
}

fn seen(response: GetResponse) -> Seen {
    let message = response.message.unwrap_or_default();
    let acknowledgements = response
        .replies
        .iter()
        .filter(|r| r.envelope.as_ref().is_some_and(|e| e.kind() == EnvelopeKind::Acknowledgement))
        .map(|r| (id_of(r), r.direction(), r.state()))
        .collect();
    Seen { direction: message.direction(), state: message.state(), acknowledgements }
}

/// Every check, in order; returns the counts for the summary.
async fn check(
    desks: &HashMap<&str, Desk>,
    clients: &mut HashMap<&str, DeskClient>,
    sent: &[Sent],
    t0: Instant,
    violations: &mut Violations,
) -> Report {
    let stored = fr_storage(clients.get_mut(RECEIVER).unwrap(), violations).await;
    check_inbox_listing(clients.get_mut(RECEIVER).unwrap(), &stored, violations).await;
    let (at_sender, extras) = check_arrivals(sent, &stored, violations);
    let acknowledgements = check_senders(desks, clients, at_sender, violations).await;
    check_receiver(desks, clients.get_mut(RECEIVER).unwrap(), &stored, &acknowledgements, violations).await;
    let (contested, overtaken) = check_precedence(sent, &stored, t0, violations);
    if let Some((sender, flash)) = overtaken {
        // The evidence for the first one: what its sender did with the FLASH request.
        let message = get(clients.get_mut(sender).unwrap(), &flash).await.message.unwrap_or_default();
        eprintln!("{sender}'s timeline of the overtaken FLASH request {flash}:\n{}", timeline(&message));
    }
    Report { received: stored.sequence.len(), extras, contested }
}

/// FR's storage, from its events (replayed from the first): per received request, its RECEIVED
/// event's sequence number (the storage order), its origin and when it was stored.
struct Stored {
    sequence: HashMap<String, u64>,
    origin: HashMap<String, String>,
    when: HashMap<String, SystemTime>,
}

async fn fr_storage(client: &mut DeskClient, violations: &mut Violations) -> Stored {
    let events = all_events(client).await;
    for (expected, event) in (1..).zip(&events) {
        if event.sequence != expected {
            violations.add(
                "FR's events have no gaps",
                format!("event {expected} is followed by {}", event.sequence),
            );
            break;
        }
    }
    let mut stored = Stored { sequence: HashMap::new(), origin: HashMap::new(), when: HashMap::new() };
    for event in events.iter().filter(|e| e.state() == MessageState::Received && !e.overdue) {
        let id = &event.message_id;
        if let Some(first) = stored.sequence.insert(id.clone(), event.sequence) {
            violations.add(
                "every request is in FR's inbox exactly once",
                format!("{id} from {} was stored twice (events {first} and {})", event.peer, event.sequence),
            );
        }
        stored.origin.insert(id.clone(), event.peer.clone());
        let at = event.at.as_ref().map_or(SystemTime::UNIX_EPOCH, hanoi247::domain::timestamp::to_system);
        stored.when.insert(id.clone(), at);
    }
    stored
}

/// FR's inbox as its desk lists it (per origin and precedence, as each listing is capped): each
/// request once, acknowledged, and the same requests as its events say.
async fn check_inbox_listing(client: &mut DeskClient, stored: &Stored, violations: &mut Violations) {
    let mut listed: HashMap<String, usize> = HashMap::new();
    let mut complete = true;
    for sender in SENDERS {
        for precedence in PRECEDENCES {
            let request = ListInboxRequest {
                limit: LIST_CAP,
                peer: sender.into(),
                precedences: vec![precedence as i32],
                ..Default::default()
            };
            let messages = client.list_inbox(request).await.unwrap().into_inner().messages;
            complete &= messages.len() < LIST_CAP as usize;
            for message in &messages {
                *listed.entry(id_of(message)).or_default() += 1;
                if message.state() != MessageState::Acknowledged {
                    violations.add(
                        "FR acknowledged every request",
                        format!("{} from {sender} is {:?} in FR's inbox", id_of(message), message.state()),
                    );
                }
            }
        }
    }
    for (id, count) in &listed {
        if *count > 1 {
            violations
                .add("every request is in FR's inbox exactly once", format!("{id} is listed {count} times"));
        }
        if !stored.sequence.contains_key(id) {
            violations
                .add("FR's inbox and its events agree", format!("{id} is listed but has no RECEIVED event"));
        }
    }
    // Long runs hold more than one listing shows; then the events alone count.
    if complete {
        for id in stored.sequence.keys().filter(|id| !listed.contains_key(*id)) {
            violations.add(
                "FR's inbox and its events agree",
                format!("{id} has a RECEIVED event but is not listed"),
            );
        }
    }
}

/// Every request whose Submit returned OK reached FR. The others FR holds are requests whose
/// Submit failed at the client after the node had stored them. Returns every request FR holds,
/// by sender, and how many of them this test did not know.
fn check_arrivals(
    sent: &[Sent],
    stored: &Stored,
    violations: &mut Violations,
) -> (HashMap<&'static str, Vec<String>>, usize) {
    let mut at_sender: HashMap<&'static str, Vec<String>> = HashMap::new();
    for s in sent {
        at_sender.entry(s.sender).or_default().push(s.id.clone());
        if !stored.sequence.contains_key(&s.id) {
            violations.add(
                "every request whose Submit returned OK is in FR's inbox",
                format!("{} {} from {} never arrived", s.precedence.as_str_name(), s.id, s.sender),
            );
        }
    }
    let known: HashMap<&str, &Sent> = sent.iter().map(|s| (s.id.as_str(), s)).collect();
    let mut extras = 0;
    for (id, origin) in &stored.origin {
        if known.contains_key(id.as_str()) {
            continue;
        }
        extras += 1;
        match SENDERS.into_iter().find(|s| *s == origin.as_str()) {
            Some(sender) => at_sender.entry(sender).or_default().push(id.clone()),
            None => violations.add("FR only holds requests of VN and DE", format!("{id} came from {origin}")),
        }
    }
    (at_sender, extras)
}

/// At each sender: every request DELIVERED or later, acknowledged, with exactly one
/// acknowledgement, and nothing else left behind. Returns the acknowledgement each request got.
async fn check_senders(
    desks: &HashMap<&str, Desk>,
    clients: &mut HashMap<&str, DeskClient>,
    mut at_sender: HashMap<&'static str, Vec<String>>,
    violations: &mut Violations,
) -> HashMap<String, String> {
    let mut acknowledgements = HashMap::new();
    for sender in SENDERS {
        let ids = at_sender.remove(sender).unwrap_or_default();
        for (id, found) in get_many(&desks[sender], ids).await {
            let seen = match found {
                Ok(seen) => seen,
                Err(status) => {
                    violations
                        .add("every request is kept by its sender", format!("{sender}: Get {id}: {status}"));
                    continue;
                }
            };
            if seen.direction != Direction::Outbound {
                violations.add(
                    "every request is kept by its sender",
                    format!("{sender}: {id} is {:?}", seen.direction),
                );
            }
            if !matches!(
                seen.state,
                MessageState::Delivered | MessageState::Acknowledged | MessageState::Answered
            ) {
                violations.add(
                    "every sender-side request is DELIVERED or later",
                    format!("{sender}: {id} is {:?}", seen.state),
                );
            } else if seen.state != MessageState::Acknowledged {
                violations.add(
                    "every acknowledgement reached its origin",
                    format!("{sender}: {id} is {:?}, not ACKNOWLEDGED", seen.state),
                );
            }
            match seen.acknowledgements.as_slice() {
                [(ack, Direction::Inbound, _)] => {
                    acknowledgements.insert(id, ack.clone());
                }
                other => violations.add(
                    "every acknowledgement reached its origin exactly once",
                    format!("{sender}: {id} has acknowledgements {other:?}"),
                ),
            }
        }
        // Nothing of the sender's is left behind, whether this test knows its id or not.
        let left = [
            MessageState::Queued,
            MessageState::WaitingRetry,
            MessageState::Delivered,
            MessageState::Expired,
            MessageState::Cancelled,
        ];
        for message in outbox_in(clients.get_mut(sender).unwrap(), &left).await {
            violations.add(
                "every sender-side request ends acknowledged",
                format!(
                    "{sender}: {} is {:?} (last error: {})",
                    id_of(&message),
                    message.state(),
                    message.last_error
                ),
            );
        }
    }
    acknowledgements
}

/// At FR: every received request has exactly one acknowledgement envelope, DELIVERED, and it is
/// the one its origin holds; no acknowledgement is left behind.
async fn check_receiver(
    desks: &HashMap<&str, Desk>,
    client: &mut DeskClient,
    stored: &Stored,
    acknowledgements: &HashMap<String, String>,
    violations: &mut Violations,
) {
    let received: Vec<String> = stored.sequence.keys().cloned().collect();
    for (id, found) in get_many(&desks[RECEIVER], received).await {
        let seen = match found {
            Ok(seen) => seen,
            Err(status) => {
                violations.add("every request is in FR's inbox", format!("FR: Get {id}: {status}"));
                continue;
            }
        };
        if seen.direction != Direction::Inbound || seen.state != MessageState::Acknowledged {
            violations.add(
                "FR acknowledged every request",
                format!("FR: {id} is {:?} {:?}", seen.direction, seen.state),
            );
        }
        match seen.acknowledgements.as_slice() {
            [(ack, Direction::Outbound, MessageState::Delivered)] => {
                if acknowledgements.get(&id).is_some_and(|at_sender| at_sender != ack) {
                    violations.add(
                        "every acknowledgement reached its origin exactly once",
                        format!("FR acknowledged {id} with {ack}, its origin holds another"),
                    );
                }
            }
            other => violations.add(
                "FR's acknowledgements are all DELIVERED, one per request",
                format!("FR: {id} has acknowledgements {other:?}"),
            ),
        }
    }
    let left =
        [MessageState::Queued, MessageState::WaitingRetry, MessageState::Expired, MessageState::Cancelled];
    for message in outbox_in(client, &left).await {
        violations.add(
            "FR's acknowledgements are all DELIVERED, one per request",
            format!("FR: {} is {:?} (last error: {})", id_of(&message), message.state(), message.last_error),
        );
    }
}

/// The outbox entries in one of `states`.
async fn outbox_in(client: &mut DeskClient, states: &[MessageState]) -> Vec<Message> {
    let states = states.iter().map(|s| *s as i32).collect();
    let request = ListOutboxRequest { limit: LIST_CAP, states, ..Default::default() };
    client.list_outbox(request).await.unwrap().into_inner().messages
}

/// Per sender: a FLASH request whose Submit returned before a ROUTINE one's Submit was called
/// must be stored at FR before it. Returns how many ROUTINE requests had such a FLASH still on
/// its way when they were submitted, and the first FLASH request overtaken (sender, id).
fn check_precedence(
    sent: &[Sent],
    stored: &Stored,
    t0: Instant,
    violations: &mut Violations,
) -> (usize, Option<(&'static str, String)>) {
    let at = |t: Instant| (t - t0).as_secs_f64();
    let mut contested = 0;
    let mut overtaken = None;
    for sender in SENDERS {
        let mine = |p: Precedence| {
            sent.iter()
                .filter(move |s| s.sender == sender && s.precedence == p)
                .filter_map(|s| stored.sequence.get(&s.id).map(|seq| (s, *seq, stored.when[&s.id])))
        };
        let mut flashes: Vec<(&Sent, u64, SystemTime)> = mine(Precedence::Flash).collect();
        flashes.sort_by_key(|(s, ..)| s.returned);
        // Among the first n FLASH requests (by Submit return): the one FR stored last, and the
        // latest time FR stored one.
        let mut latest: Vec<((&Sent, u64), SystemTime)> = Vec::with_capacity(flashes.len());
        for &(flash, seq, when) in &flashes {
            let best = match latest.last() {
                Some(&(best, latest_when)) => {
                    (if best.1 > seq { best } else { (flash, seq) }, latest_when.max(when))
                }
                None => ((flash, seq), when),
            };
            latest.push(best);
        }
        for (routine, seq, _) in mine(Precedence::Routine) {
            let earlier = flashes.partition_point(|(f, ..)| f.returned < routine.started);
            if earlier == 0 {
                continue;
            }
            let ((flash, flash_seq), latest_when) = latest[earlier - 1];
            if latest_when > routine.started_wall {
                contested += 1;
            }
            if flash_seq > seq {
                overtaken.get_or_insert_with(|| (sender, flash.id.clone()));
                violations.add(
                    "FLASH never arrives after a ROUTINE queued later",
                    format!(
                        "{sender}: FLASH {} (Submit returned at {:.3}s) was stored at FR after ROUTINE {} \
                         (Submit called at {:.3}s): FR events {flash_seq} > {seq}",
                        flash.id,
                        at(flash.returned),
                        routine.id,
                        at(routine.started),
                    ),
                );
            }
        }
    }
    (contested, overtaken)
}

/// Every event the node stored, from the first to the latest at the time of the call.
async fn all_events(client: &mut DeskClient) -> Vec<WatchResponse> {
    // A Watch "from now" says where now is.
    let now = client.watch(WatchRequest { after_sequence: None }).await.unwrap();
    let latest: u64 = now.metadata().get(WATCH_AFTER_HEADER).unwrap().to_str().unwrap().parse().unwrap();
    drop(now);
    let mut events = Vec::new();
    if latest == 0 {
        return events;
    }
    let mut stream = client.watch(WatchRequest { after_sequence: Some(0) }).await.unwrap().into_inner();
    while let Some(event) = timeout(DEADLINE, stream.message()).await.unwrap().unwrap() {
        let sequence = event.sequence;
        events.push(event);
        if sequence >= latest {
            break;
        }
    }
    events
}

/// `Get` for many ids, a few calls at a time.
async fn get_many(desk: &Desk, ids: Vec<String>) -> Vec<(String, Result<Seen, tonic::Status>)> {
    let mut tasks = JoinSet::new();
    let chunk = ids.len().div_ceil(4).max(1);
    for part in ids.chunks(chunk) {
        let (desk, part) = (desk.clone(), part.to_vec());
        tasks.spawn(async move {
            let mut client = desk.connect();
            let mut found = Vec::with_capacity(part.len());
            for id in part {
                let response = client.get(GetRequest { id: id.clone() }).await;
                found.push((id, response.map(|r| seen(r.into_inner()))));
            }
            found
        });
    }
    let mut all = Vec::with_capacity(ids.len());
    while let Some(result) = tasks.join_next().await {
        all.extend(result.unwrap());
    }
    all
}

// ---- small helpers --------------------------------------------------------------------------

fn id_of(message: &Message) -> String {
    message.envelope.as_ref().map(|e| e.id.clone()).unwrap_or_default()
}

async fn get(desk: &mut DeskClient, id: &str) -> GetResponse {
    desk.get(GetRequest { id: id.into() }).await.unwrap().into_inner()
}

/// A message's timeline, one entry a line.
fn timeline(message: &Message) -> String {
    let entry = |t: &hanoi247::proto::TimelineEntry| {
        let at = t.at.as_ref().map(hanoi247::domain::timestamp::rfc3339).unwrap_or_default();
        format!("  {at} {:?}: {}", t.state(), t.note)
    };
    message.timeline.iter().map(entry).collect::<Vec<_>>().join("\n")
}

/// Whether a delivery error says the peer did not answer in time.
fn is_timeout(error: &str) -> bool {
    let error = error.to_lowercase();
    error.contains("timed out") || error.contains("timeout")
}
