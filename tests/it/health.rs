//! Issue 15 (wake the duty officer): the metrics an operator pages on, served as the OpenMetrics
//! text they are, and health that tells the truth (the store cannot write, shutdown, systemd).

use std::io::{Read as _, Write as _};
use std::time::Duration;

use hanoi247::proto::{AcknowledgeRequest, MessageState, Precedence};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::support::*;

/// One plain HTTP/1.0 GET on the metrics listener: (status, headers, body).
fn get(port: u16, path: &str) -> (u16, String, String) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (status, head.to_ascii_lowercase(), body.to_owned())
}

async fn get_async(port: u16, path: &str) -> (u16, String, String) {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || get(port, &path)).await.unwrap()
}

/// The value of the sample line `sample` (name and labels exactly as served; an unlabelled
/// sample may be served as `name{}`).
fn sample(body: &str, sample: &str) -> Option<f64> {
    body.lines().find_map(|line| {
        let rest = line.strip_prefix(sample)?;
        let rest = rest.strip_prefix("{}").unwrap_or(rest);
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

/// Checks the OpenMetrics rules Prometheus relies on to keep types: `# EOF` last, every sample
/// belongs to a family with a `# TYPE` line, counter families are named without `_total` and
/// their samples with it.
fn assert_valid_openmetrics(body: &str) {
    assert!(body.ends_with("# EOF\n"), "no # EOF at the end:\n{body}");
    assert_eq!(body.matches("# EOF").count(), 1, "{body}");
    let mut types = std::collections::HashMap::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (family, kind) = rest.split_once(' ').unwrap();
            assert!(
                !(kind == "counter" && family.ends_with("_total")),
                "counter family named with _total: {line}"
            );
            assert!(types.insert(family.to_owned(), kind.to_owned()).is_none(), "family typed twice: {line}");
        }
    }
    for line in body.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let name = line.split(['{', ' ']).next().unwrap();
        let family = types.keys().filter(|family| name.starts_with(family.as_str())).max_by_key(|f| f.len());
        let family = family.unwrap_or_else(|| panic!("sample without a # TYPE line: {line}"));
        if types[family] == "counter" {
            assert_eq!(name, format!("{family}_total"), "counter sample not named <family>_total: {line}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_openmetrics_with_the_figures_an_operator_pages_on() {
    let mut net = Network::new(&["VN", "FR"]).await;
    net.start("VN").await;
    net.start("FR").await;
    let port = net.config("FR").metrics.listen.port();
    let mut vn = net.desk("VN");
    let mut fr = net.desk("FR");

    // Before anything arrives: every precedence is there, at zero.
    let (status, head, body) = get_async(port, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        head.contains("content-type: application/openmetrics-text; version=1.0.0; charset=utf-8"),
        "{head}"
    );
    assert_valid_openmetrics(&body);
    for precedence in ["FLASH", "IMMEDIATE", "PRIORITY", "ROUTINE"] {
        let name = format!("hanoi247_unacknowledged_requests{{precedence=\"{precedence}\"}}");
        assert_eq!(sample(&body, &name), Some(0.0), "{name}\n{body}");
    }
    assert_eq!(sample(&body, "hanoi247_store_writable"), Some(1.0), "{body}");
    let version = format!("hanoi247_build_info{{version=\"{}\"}}", env!("CARGO_PKG_VERSION"));
    assert_eq!(sample(&body, &version), Some(1.0), "{body}");
    if cfg!(target_os = "linux") {
        let resident = sample(&body, "process_resident_memory_bytes").unwrap();
        assert!(resident > 1_000_000.0, "a node takes more than 1 MB: {resident}");
        let open = sample(&body, "process_open_fds").unwrap();
        let max = sample(&body, "process_max_fds").unwrap();
        assert!(open >= 3.0 && open < max, "open files {open} of {max}");
    }

    // A FLASH request from VN waits for FR's duty officer: counted, and its age grows.
    let id = submit(&mut vn, advice_request("FR", Precedence::Flash, "wake up")).await;
    wait_state(&mut fr, &id, MessageState::Received).await;
    let (_, _, body) = get_async(port, "/metrics").await;
    assert_valid_openmetrics(&body);
    assert_eq!(sample(&body, "hanoi247_unacknowledged_requests{precedence=\"FLASH\"}"), Some(1.0), "{body}");
    assert_eq!(sample(&body, "hanoi247_unacknowledged_requests{precedence=\"ROUTINE\"}"), Some(0.0));
    let age = sample(&body, "hanoi247_unacknowledged_oldest_age_seconds{precedence=\"FLASH\"}").unwrap();
    assert!(age > 0.0 && age < DEADLINE.as_secs_f64() * 2.0, "age {age}");
    assert!(body.contains("# TYPE hanoi247_envelopes_received counter\n"), "{body}");
    assert!(
        sample(&body, "hanoi247_envelopes_received_total{peer=\"VN\",kind=\"REQUEST\"}").is_some(),
        "{body}"
    );
    // The sender does not count it: it waits for a person at FR, not at VN.
    let (_, _, at_vn) = get_async(net.config("VN").metrics.listen.port(), "/metrics").await;
    assert_eq!(sample(&at_vn, "hanoi247_unacknowledged_requests{precedence=\"FLASH\"}"), Some(0.0));

    fr.acknowledge(AcknowledgeRequest { id: id.clone(), note: "on it".into() }).await.unwrap();
    let (_, _, body) = get_async(port, "/metrics").await;
    assert_eq!(sample(&body, "hanoi247_unacknowledged_requests{precedence=\"FLASH\"}"), Some(0.0), "{body}");
    assert_eq!(sample(&body, "hanoi247_unacknowledged_oldest_age_seconds{precedence=\"FLASH\"}"), Some(0.0));
    net.stop("FR").await;
    net.stop("VN").await;
}

/// The gRPC health status of `service` ("" for the whole server) on `node`'s peer listener,
/// asked with `as_node`'s certificate.
async fn grpc_health(net: &Network, as_node: &str, node: &str, service: &str) -> ServingStatus {
    let mut client = HealthClient::new(net.peer_channel(as_node, node));
    let request = HealthCheckRequest { service: service.into() };
    client.check(request).await.unwrap().into_inner().status()
}

/// Everything that says whether `node` can take work: `/readyz`, gRPC health (the server and
/// the desk service), `hanoi247_store_writable`.
async fn readiness(net: &Network, node: &str) -> (u16, ServingStatus, ServingStatus, Option<f64>) {
    let port = net.config(node).metrics.listen.port();
    let (ready, _, _) = get_async(port, "/readyz").await;
    let server = grpc_health(net, "FR", node, "").await;
    let desk = grpc_health(net, "FR", node, "hanoi247.v1.DeskService").await;
    let (_, _, body) = get_async(port, "/metrics").await;
    (ready, server, desk, sample(&body, "hanoi247_store_writable"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_says_not_serving_while_the_store_cannot_write_and_serving_once_it_can() {
    let net = Network::new(&["VN", "FR"]).await;
    let vn_process = net.spawn_with_file_limit("VN", 2048).await;
    let mut vn = net.desk("VN");
    let serving = (200, ServingStatus::Serving, ServingStatus::Serving, Some(1.0));
    assert_eq!(readiness(&net, "VN").await, serving);

    // Fill the "disk" until a Submit is refused: the store has failed a write.
    for n in 0.. {
        assert!(n < 400, "the disk never filled up");
        let mut request = advice_request("FR", Precedence::Routine, &format!("filler {n}"));
        request.body = "x".repeat(16 * 1024);
        if let Err(status) = vn.submit(request).await {
            assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
            break;
        }
    }
    let not_serving = (503, ServingStatus::NotServing, ServingStatus::NotServing, Some(0.0));
    eventually("every probe says the store cannot write", async || {
        readiness(&net, "VN").await == not_serving
    })
    .await;
    let (_, _, why) = get_async(net.config("VN").metrics.listen.port(), "/readyz").await;
    assert!(why.contains("store cannot write"), "{why}");

    // Space returns: the store reopens by itself, and every probe says so.
    vn_process.lift_file_limit();
    eventually("every probe says serving again", async || readiness(&net, "VN").await == serving).await;
    submit(&mut vn, advice_request("FR", Precedence::Flash, "after recovery")).await;
    drop(vn_process);
}

/// Reads the next datagram on `socket` (within its read timeout) as text.
fn next_state(socket: &std::os::unix::net::UnixDatagram) -> String {
    let mut buffer = [0u8; 1024];
    let n = socket.recv(&mut buffer).expect("no notification within the deadline");
    String::from_utf8_lossy(&buffer[..n]).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_systemd_the_node_says_ready_pings_the_watchdog_and_says_stopping() {
    let net = Network::new(&["VN", "FR"]).await;
    let socket_path = net.dir().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(DEADLINE)).unwrap();
    let socket_name = socket_path.to_str().unwrap();
    // A watchdog of 400 ms: a ping every 200 ms.
    let vn = net.spawn_with_env("VN", &[("NOTIFY_SOCKET", socket_name), ("WATCHDOG_USEC", "400000")]).await;

    assert_eq!(next_state(&socket), "READY=1", "READY=1 comes first, once the listeners serve");
    // The pings keep coming, each well within the watchdog's 400 ms (every 200 ms; the exact
    // period is the unit test in node::systemd). Generous bound: the machine is shared.
    socket.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    for _ in 0..5 {
        assert_eq!(next_state(&socket), "WATCHDOG=1");
    }
    socket.set_read_timeout(Some(DEADLINE)).unwrap();

    let status = vn.terminate().await;
    assert!(status.success(), "{status:?}");
    let mut after = next_state(&socket);
    while after == "WATCHDOG=1" {
        after = next_state(&socket);
    }
    assert_eq!(after, "STOPPING=1");
    let log = net.log_of("VN");
    assert!(log.contains("node stopped"), "{log}");
    // A log file (or the journal) is not a terminal: no colour codes in it.
    assert!(!log.contains('\u{1b}'), "ANSI escape codes in the log file:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line_for_log_shippers() {
    let net = Network::new(&["VN", "FR"]).await;
    let log_path = net.dir().join("VN.json.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_hanoi247"))
        .args(["--log-format", "json", "node", "--config"])
        .arg(net.config_path("VN"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    eventually("the node logs that it started", async || {
        std::fs::read_to_string(&log_path).unwrap().contains("node started")
    })
    .await;
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap();
    assert!(status.success(), "{status:?}");
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(!log.contains('\u{1b}'), "{log}");
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let started = lines.iter().find(|l| l["fields"]["message"] == "node started").expect("node started");
    assert_eq!(started["level"], "INFO");
    assert_eq!(started["fields"]["node"], "VN");
    assert!(started["timestamp"].is_string() && started["target"].is_string(), "{started}");
    assert!(lines.iter().any(|l| l["fields"]["message"] == "node stopped"), "{log}");
}

#[test]
fn the_systemd_unit_waits_for_ready_and_watches_the_node() {
    let unit =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/hanoi247.service")).unwrap();
    for required in ["\nType=notify\n", "\nNotifyAccess=main\n", "\nWatchdogSec=", "AF_UNIX"] {
        assert!(unit.contains(required), "hanoi247.service lacks {required:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_notify_socket_the_node_runs_as_before() {
    // WATCHDOG_USEC alone (no NOTIFY_SOCKET) changes nothing: nobody to tell.
    let net = Network::new(&["VN", "FR"]).await;
    let vn = net.spawn_with_env("VN", &[("WATCHDOG_USEC", "400000")]).await;
    assert!(vn.terminate().await.success());
    assert!(!net.log_of("VN").contains("NOTIFY_SOCKET"), "{}", net.log_of("VN"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_says_not_serving_as_soon_as_shutdown_starts() {
    let net = Network::new(&["VN", "FR"]).await;
    let config = net.config("VN");
    let peer = tokio::net::TcpListener::bind(config.listen.peer).await.unwrap();
    let desk = tokio::net::TcpListener::bind(config.listen.desk).await.unwrap();
    let node = hanoi247::node::RunningNode::start_on(config, peer, desk).await.unwrap();
    // A probe watching the node's health, as a load balancer does.
    let mut client = HealthClient::new(net.peer_channel("FR", "VN"));
    let mut updates = client.watch(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
    assert_eq!(updates.message().await.unwrap().unwrap().status(), ServingStatus::Serving);

    let stopping = tokio::spawn(node.shutdown());
    let next = tokio::time::timeout(DEADLINE, updates.message()).await.unwrap().unwrap().unwrap();
    assert_eq!(next.status(), ServingStatus::NotServing, "the probe hears it before the listeners close");
    // The watch was the last call in flight: the node stops without waiting out its grace period.
    drop(updates);
    drop(client);
    tokio::time::timeout(DEADLINE, stopping).await.unwrap().unwrap().unwrap();
}
