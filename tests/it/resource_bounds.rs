//! Issue 14, resource bounds (`[limits]`): connections and handshakes per listener and per
//! remote address, refused before the handshake; refused handshakes counted and logged at most
//! once per interval; concurrent streams per connection and a request timeout that spares
//! streams; the desk's per-client call rate, list filter sizes and streams per client; repeated
//! audit records aggregated. Acceptance 3: 2,000 idle connections against the peer listener
//! leave room for a FLASH, and the node's open files stay under the cap.

use std::time::{Duration, Instant};

use hanoi247::proto::{ListInboxRequest, MessageState, Precedence, WatchRequest};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};

use crate::operator_view::metric;
use crate::support::*;

/// A `[limits]` section for a node's config, put before `[deadlines]` (which `init` writes).
fn with_limits(net: &Network, node: &str, limits: &str) {
    net.edit_config(node, "[deadlines]\n", &format!("[limits]\n{limits}\n[deadlines]\n"));
}

/// The files a process has open (its entries in /proc/<pid>/fd).
fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

/// Raises this process's soft limit of open files to at least `wanted` (bounded by the hard
/// limit, which the test then needs to be enough).
fn raise_file_limit(wanted: u64) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct we pass.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        assert!(limit.rlim_max >= wanted, "the hard RLIMIT_NOFILE ({}) is below {wanted}", limit.rlim_max);
        if limit.rlim_cur < wanted {
            limit.rlim_cur = wanted;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
        }
    }
}

/// A TCP connection from `source` (a loopback address) to `port` that sends nothing.
async fn idle_connection(source: &str, port: u16) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    tokio::time::timeout(DEADLINE, socket.connect(([127, 0, 0, 1], port).into()))
        .await
        .expect("the kernel completes the connect")
        .unwrap()
}

/// Whether the node closed `tcp` within `within` (EOF or reset, after a TLS alert if it sent
/// one) rather than keeping it open.
async fn closed_within(tcp: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 256];
    let closed = async { while let Ok(1..) = tcp.read(&mut buf).await {} };
    tokio::time::timeout(within, closed).await.is_ok()
}

/// The value of a sample on `node`'s metrics listener, read off the async workers.
async fn sample(net: &Network, node: &str, sample: &str) -> f64 {
    let port = net.config(node).metrics.listen.port();
    let sample = sample.to_owned();
    tokio::task::spawn_blocking(move || metric(port, &sample)).await.unwrap().unwrap_or(0.0)
}

const PEER_ADDRESS_REFUSED: &str = "hanoi247_connections_refused_total{listener=\"peer\",reason=\"address\"}";

/// Acceptance 3. The idle connections come from 127.0.0.2, a second loopback address: the per
/// address cap refuses all but a few of them at once, so a real peer (from 127.0.0.1) finds
/// room without waiting for handshakes to time out, and the node's files stay bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_idle_connections_leave_room_for_a_flash_and_bound_the_node_files() {
    const IDLE: usize = 2_000;
    const CAP: usize = 256;
    let mut net = Network::new(&["VN", "FR"]).await;
    with_limits(
        &net,
        "VN",
        &format!(
            "max_connections_per_listener = {CAP}\nmax_handshakes_per_listener = 64\nmax_peer_connections_per_address = 16\nhandshake_timeout = \"3s\"\n"
        ),
    );
    let vn = net.spawn("VN").await;
    let pid = vn.child.id();
    let before = open_files(pid);
    raise_file_limit(IDLE as u64 + 1_024);

    let port = net.config("VN").listen.peer.port();
    let started = Instant::now();
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        idle.push(idle_connection("127.0.0.2", port).await);
    }
    assert!(started.elapsed() < DEADLINE, "2,000 connects took {:?}", started.elapsed());
    // All but the 16 admitted from 127.0.0.2 are refused as they are accepted.
    let mut refused = 0.0;
    eventually("VN refused the idle connections over the per-address cap", async || {
        refused = sample(&net, "VN", PEER_ADDRESS_REFUSED).await;
        refused >= (IDLE - 16) as f64
    })
    .await;
    let during = open_files(pid);
    assert!(
        during < before + CAP,
        "VN has {during} files open with {IDLE} idle connections against it ({before} before; cap {CAP})"
    );

    net.start("FR").await;
    let mut fr = net.desk("FR");
    let flash = advice_request("VN", Precedence::Flash, "under a flood");
    let submitted = Instant::now();
    let id = submit(&mut fr, flash).await;
    wait_state(&mut fr, &id, MessageState::Delivered).await;
    let took = submitted.elapsed();
    assert!(took < Duration::from_secs(3), "the FLASH took {took:?}, more than the handshake timeout");
    let mut vn_desk = net.desk("VN");
    assert!(ids(&inbox(&mut vn_desk).await).contains(&id), "VN stored and serves the FLASH");
    let after = open_files(pid);
    assert!(after < before + CAP, "VN has {after} files open after the delivery ({before} before)");
    drop(idle);
    net.stop("FR").await;
}

/// Handshakes and connections over the listener's caps are closed at once, before any TLS byte,
/// counted by reason; a desk client is served again as soon as there is room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_listener_caps_are_closed_before_the_handshake() {
    let mut net = Network::new(&["VN", "FR"]).await;
    // A long handshake timeout: a connection closed within a second was refused, not timed out.
    with_limits(
        &net,
        "VN",
        "max_connections_per_listener = 4\nmax_handshakes_per_listener = 2\nmax_peer_connections_per_address = 4\nhandshake_timeout = \"60s\"\n",
    );
    net.start("VN").await;
    let port = net.config("VN").listen.desk.port();
    let quick = Duration::from_secs(1);

    // Two silent clients fill the handshakes: a third connection is closed at once.
    let mut silent = vec![idle_connection("127.0.0.1", port).await, idle_connection("127.0.0.1", port).await];
    let mut third = idle_connection("127.0.0.1", port).await;
    assert!(closed_within(&mut third, quick).await, "a third handshake is refused at once");
    for tcp in &mut silent {
        assert!(!closed_within(tcp, Duration::from_millis(200)).await, "the first two are kept");
    }
    let handshakes = "hanoi247_connections_refused_total{listener=\"desk\",reason=\"handshakes\"}";
    assert_eq!(sample(&net, "VN", handshakes).await, 1.0);
    drop(silent);

    // The node serves again once the silent ones are gone; two served clients and two silent
    // ones fill the connections: a fifth is closed at once.
    let mut officer = net.desk("VN");
    let mut operator = net.desk_as("VN", "operator");
    eventually("VN serves a desk client again", async || {
        officer.list_inbox(ListInboxRequest::default()).await.is_ok()
    })
    .await;
    operator.list_inbox(ListInboxRequest::default()).await.unwrap();
    let _silent = [idle_connection("127.0.0.1", port).await, idle_connection("127.0.0.1", port).await];
    let mut fifth = idle_connection("127.0.0.1", port).await;
    assert!(closed_within(&mut fifth, quick).await, "a fifth connection is refused at once");
    let connections = "hanoi247_connections_refused_total{listener=\"desk\",reason=\"connections\"}";
    assert_eq!(sample(&net, "VN", connections).await, 1.0);
    // The clients already connected are still served, and nothing was stored.
    assert!(officer.list_inbox(ListInboxRequest::default()).await.unwrap().into_inner().messages.is_empty());
    net.stop("VN").await;
}

/// A scanner's refused handshakes: every one counted, one WARN line per interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_handshakes_are_counted_and_logged_once_per_interval() {
    use tokio::io::AsyncWriteExt;
    const SCANS: usize = 20;
    let net = Network::new(&["VN", "FR"]).await;
    with_limits(&net, "VN", "refusal_log_interval = \"1h\"\n");
    let _vn = net.spawn("VN").await;
    let port = net.config("VN").listen.peer.port();
    for _ in 0..SCANS {
        let mut tcp = idle_connection("127.0.0.1", port).await;
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        assert!(closed_within(&mut tcp, DEADLINE).await, "not TLS: refused");
    }
    let refused = "hanoi247_connections_refused_total{listener=\"peer\",reason=\"handshake\"}";
    eventually("every refused handshake is counted", async || {
        sample(&net, "VN", refused).await == SCANS as f64
    })
    .await;
    let log = net.log_of("VN");
    let lines = log.lines().filter(|line| line.contains("WARN") && line.contains("refused")).count();
    assert_eq!(lines, 1, "one WARN line for {SCANS} refusals:\n{log}");
    // The node still serves its desk.
    net.desk("VN").list_inbox(ListInboxRequest::default()).await.unwrap();
}

/// `max_streams_per_connection` holds a third call on a connection with two `Watch` streams
/// open until one ends; `request_timeout` does not cut a `Watch` that runs longer than it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_per_connection_are_capped_and_the_request_timeout_spares_watch() {
    use tokio_stream::StreamExt;
    let mut net = Network::new(&["VN", "FR"]).await;
    with_limits(&net, "VN", "max_streams_per_connection = 2\nrequest_timeout = \"1s\"\n");
    net.start("VN").await;
    net.start("FR").await;
    let mut vn = net.desk("VN");
    // Clones share one connection.
    let mut first = vn.watch(WatchRequest::default()).await.unwrap().into_inner();
    let second = vn.clone().watch(WatchRequest::default()).await.unwrap().into_inner();
    let mut another = vn.clone();
    let third = tokio::time::timeout(Duration::from_secs(2), another.list_inbox(ListInboxRequest::default()));
    assert!(third.await.is_err(), "a third stream on the connection waits while two are open");
    drop(second);
    eventually("the third call is answered once a stream ends", async || {
        tokio::time::timeout(Duration::from_secs(1), vn.list_inbox(ListInboxRequest::default()))
            .await
            .is_ok_and(|answer| answer.is_ok())
    })
    .await;
    // The request timeout (1s) has passed since `first` started: it still delivers events.
    let id = submit(&mut vn, advice_request("FR", Precedence::Flash, "after the timeout")).await;
    let event = tokio::time::timeout(DEADLINE, first.next()).await.expect("an event").expect("open");
    assert_eq!(event.unwrap().message_id, id, "the watch outlives the request timeout");
    net.stop("FR").await;
    net.stop("VN").await;
}
