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
    // All but the 16 admitted from 127.0.0.2 are refused as they are accepted; meanwhile the
    // node's files never reach the cap.
    eventually("VN refused the idle connections over the per-address cap", async || {
        let during = open_files(pid);
        assert!(
            during < before + CAP,
            "VN has {during} files open with {IDLE} idle connections against it ({before} before; cap {CAP})"
        );
        sample(&net, "VN", PEER_ADDRESS_REFUSED).await >= (IDLE - 16) as f64
    })
    .await;

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
    let lines = log
        .lines()
        .filter(|line| line.contains("WARN") && line.contains("further refusals on this listener"))
        .count();
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

/// A desk client over its call rate is refused with RESOURCE_EXHAUSTED naming the limit and
/// when to retry; nothing of the refused call is stored, other clients are served, and so is
/// the same client once it waited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_desk_client_over_its_call_rate_is_told_when_to_retry() {
    let mut net = Network::new(&["VN", "FR"]).await;
    with_limits(&net, "VN", "desk_calls_per_second = 1\ndesk_call_burst = 3\n");
    net.start("VN").await;
    let mut officer = net.desk("VN");
    // The burst, then a token a second: submissions until one is refused (a slow machine may
    // earn a token or two on the way).
    let mut stored = Vec::new();
    let status = loop {
        assert!(stored.len() < 20, "20 submissions and none refused");
        match officer.submit(advice_request("FR", Precedence::Flash, "over the rate")).await {
            Ok(answer) => stored.push(answer.into_inner().message.unwrap().envelope.unwrap().id),
            Err(status) => break status,
        }
    };
    assert!(stored.len() >= 3, "the burst is served: {}", stored.len());
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    let message = status.message();
    assert!(message.contains("limits.desk_calls_per_second") && message.contains("retry in"), "{message}");
    let limited = "hanoi247_desk_calls_limited_total{reason=\"rate\"}";
    assert_eq!(sample(&net, "VN", limited).await, 1.0);

    let mut operator = net.desk_as("VN", "operator");
    let mut listed = ids(&outbox(&mut operator).await);
    listed.sort();
    stored.sort();
    assert_eq!(listed, stored, "the refused submission stored nothing");
    eventually("the officer is served again after waiting", async || {
        officer.list_inbox(ListInboxRequest::default()).await.is_ok()
    })
    .await;
    net.stop("VN").await;
}

/// A list filter with more values than `limits.max_filter_values` is refused naming the field;
/// at the limit it is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_filters_over_the_limit_are_refused_naming_the_field() {
    use hanoi247::proto::ListOutboxRequest;
    let mut net = Network::new(&["VN", "FR"]).await;
    with_limits(&net, "VN", "max_filter_values = 4\n");
    net.start("VN").await;
    let mut vn = net.desk("VN");
    let id = submit(&mut vn, advice_request("FR", Precedence::Flash, "listed")).await;
    // FR is down: the request is queued or waiting to retry.
    let states = |n| {
        [MessageState::Queued, MessageState::WaitingRetry].iter().cycle().take(n).map(|s| *s as i32).collect()
    };
    let precedences = |n| vec![Precedence::Flash as i32; n];

    let status =
        vn.list_inbox(ListInboxRequest { states: states(5), ..Default::default() }).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.message().starts_with("states") && status.message().contains("limits.max_filter_values"));
    let request = ListOutboxRequest { precedences: precedences(5), ..Default::default() };
    let status = vn.list_outbox(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.message().starts_with("precedences"), "{status:?}");

    let request = ListOutboxRequest { states: states(4), precedences: precedences(4), ..Default::default() };
    let listed = vn.list_outbox(request).await.unwrap().into_inner().messages;
    assert_eq!(ids(&listed), vec![id], "at the limit the filter is served");
    net.stop("VN").await;
}

/// `Watch` streams per client: one over `limits.max_streams_per_client` is refused naming the
/// limit; another client is not affected; the place comes back when a stream ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_per_client_are_capped() {
    let mut net = Network::new(&["VN", "FR"]).await;
    with_limits(&net, "VN", "max_streams_per_client = 2\n");
    net.start("VN").await;
    let mut officer = net.desk("VN");
    let first = officer.watch(WatchRequest::default()).await.unwrap().into_inner();
    let _second = officer.watch(WatchRequest::default()).await.unwrap().into_inner();
    let status = officer.watch(WatchRequest::default()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("limits.max_streams_per_client"), "{status:?}");
    let mut operator = net.desk_as("VN", "operator");
    let _theirs = operator.watch(WatchRequest::default()).await.expect("another client has its own cap");
    let limited = "hanoi247_desk_calls_limited_total{reason=\"streams\"}";
    assert_eq!(sample(&net, "VN", limited).await, 1.0);

    drop(first);
    eventually("a place comes back when a stream ends", async || {
        officer.watch(WatchRequest::default()).await.is_ok()
    })
    .await;
    net.stop("VN").await;
}

/// A loop of the same read and the same refused call writes one audit record each, then one
/// record with the count when the interval ends; the chain still verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_reads_and_refusals_are_aggregated_in_the_audit_log() {
    use hanoi247::domain::access::Role;
    use hanoi247::proto::{GetRequest, ListAuditRequest, ListAuditResponse};
    use tokio_stream::StreamExt;
    const LOOPS: usize = 50;
    async fn records(auditor: &mut hanoi247::cli::desk_client::DeskClient) -> Vec<ListAuditResponse> {
        let mut stream = auditor.list_audit(ListAuditRequest::default()).await.unwrap().into_inner();
        let mut records = Vec::new();
        while let Some(record) = tokio::time::timeout(DEADLINE, stream.next()).await.unwrap() {
            records.push(record.unwrap());
        }
        records
    }
    let clients = [("VN", "duty", Role::Officer), ("VN", "audit", Role::Auditor)];
    let mut net = Network::with_clients(&["VN", "FR"], &clients).await;
    with_limits(&net, "VN", "audit_aggregation_interval = \"1s\"\n");
    net.start("VN").await;
    let (mut duty, mut auditor) = (net.desk_as("VN", "duty"), net.desk_as("VN", "audit"));
    let before = records(&mut auditor).await.len();
    for _ in 0..LOOPS {
        duty.list_inbox(ListInboxRequest::default()).await.unwrap();
        let refused = auditor.get(GetRequest { id: uuid::Uuid::nil().to_string() }).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    }
    let after = records(&mut auditor).await;
    assert!(
        after.len() <= before + 3,
        "{} records for {LOOPS} reads and {LOOPS} refusals: {:#?}",
        after.len() - before,
        &after[before..]
    );
    let repeated = format!("[repeated {} more times", LOOPS - 1);
    let mut last = Vec::new();
    eventually("the counts of the repeats are recorded", async || {
        last = records(&mut auditor).await;
        let counted = |who: &str, action: &str| {
            last.iter().any(|r| r.who == who && r.action == action && r.details.contains(&repeated))
        };
        counted("duty (officer)", "ListInbox") && counted("audit (auditor)", "Get")
    })
    .await;
    hanoi247::store::audit::verify(&last, None).unwrap();
    net.stop("VN").await;
}

/// The console's event stream (SSE) counts among the client's streams: with a `Watch` open and
/// `max_streams_per_client = 1`, the officer's browser gets 429 for `/events`, another client's
/// browser is served, and the officer's is once the `Watch` ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_event_streams_count_among_the_clients_streams() {
    use std::sync::Arc;
    use tokio::io::AsyncWriteExt;
    fn browser(net: &Network, name: &str) -> Arc<rustls::ClientConfig> {
        let client = hanoi247::config::ClientConfig::load(&net.client_config_path_of("VN", name)).unwrap();
        let tls = hanoi247::trust::tls::client_config(&client.ca, &client.cert, &client.key).unwrap();
        let mut config = (*tls).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
    /// The status line of `GET /events` (the connection is kept open by the caller's drop).
    async fn events(config: Arc<rustls::ClientConfig>, port: u16) -> String {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.unwrap();
        let request =
            format!("GET /events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n\r\n");
        tls.write_all(request.as_bytes()).await.unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 1024];
        while !seen.windows(2).any(|w| w == b"\r\n") {
            let n = tokio::time::timeout(DEADLINE, tls.read(&mut buf)).await.unwrap().unwrap();
            assert!(n > 0, "the console closed the connection");
            seen.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&seen).into_owned();
        text.lines().next().unwrap_or_default().to_owned()
    }
    let mut net = Network::new(&["VN", "FR"]).await;
    with_limits(&net, "VN", "max_streams_per_client = 1\n");
    net.start("VN").await;
    let port = net.config("VN").console.listen.port();
    let watch = net.desk("VN").watch(WatchRequest::default()).await.unwrap().into_inner();
    let status = events(browser(&net, "officer"), port).await;
    assert!(status.starts_with("HTTP/1.1 429"), "{status}");
    let status = events(browser(&net, "operator"), port).await;
    assert!(status.starts_with("HTTP/1.1 200"), "another client: {status}");
    drop(watch);
    eventually("the officer's browser gets its stream once the Watch ends", async || {
        events(browser(&net, "officer"), port).await.starts_with("HTTP/1.1 200")
    })
    .await;
    net.stop("VN").await;
}

/// A connection that never finishes its handshake is closed after `limits.handshake_timeout`,
/// and counted; the node serves meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_closed_after_the_handshake_timeout() {
    let mut net = Network::new(&["VN", "FR"]).await;
    with_limits(&net, "VN", "handshake_timeout = \"1s\"\n");
    net.start("VN").await;
    let port = net.config("VN").listen.peer.port();
    let opened = Instant::now();
    let mut silent = idle_connection("127.0.0.1", port).await;
    net.desk("VN").list_inbox(ListInboxRequest::default()).await.expect("the node serves meanwhile");
    assert!(closed_within(&mut silent, Duration::from_secs(5)).await, "closed after the handshake timeout");
    let took = opened.elapsed();
    assert!(took >= Duration::from_millis(900), "not before the timeout: {took:?}");
    let timeouts = "hanoi247_connections_refused_total{listener=\"peer\",reason=\"timeout\"}";
    assert_eq!(sample(&net, "VN", timeouts).await, 1.0);
    net.stop("VN").await;
}

/// `limits.request_timeout` cuts a call that does not answer in time: a `Deliver` that waits for
/// a predecessor batch that never comes (the receiver waits up to 2 s for it) is cut at 500 ms;
/// nothing is stored and the node serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_does_not_answer_within_the_request_timeout_is_cut() {
    use hanoi247::proto::{DeliverRequest, Envelope};
    let mut net = Network::new(&["VN", "FR"]).await;
    with_limits(&net, "VN", "request_timeout = \"500ms\"\n");
    net.start("VN").await;
    let mut fr = net.peer_client("FR", "VN");
    let envelope = Envelope {
        id: uuid::Uuid::now_v7().to_string(),
        origin: "FR".into(),
        destination: "VN".into(),
        ..Default::default()
    };
    // Batch 2 of a new session: batch 1 never comes.
    let request = DeliverRequest {
        envelopes: vec![envelope],
        sender_session: uuid::Uuid::now_v7().to_string(),
        batch_number: 2,
        ..Default::default()
    };
    let started = Instant::now();
    let status = fr.deliver(request).await.expect_err("cut by the request timeout");
    let took = started.elapsed();
    assert_eq!(status.code(), tonic::Code::Cancelled, "{status:?}");
    assert!(status.message().contains("Timeout expired"), "{status:?}");
    assert!(took < Duration::from_millis(1_500), "cut at the timeout, not after the 2 s wait: {took:?}");
    let mut vn = net.desk("VN");
    assert!(inbox(&mut vn).await.is_empty(), "nothing stored");
    net.stop("VN").await;
}
