//! Issue 6: overdue requests (Watch event, metric over HTTP, CLI JSON), Watch resuming across a
//! node restart without gaps or repeats, health and reflection on both listeners, queue and peers.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use hanoi247::config::ClientConfig;
use hanoi247::proto::{
    AcknowledgeRequest, GetQueueRequest, ListPeersRequest, MessageState, Precedence, WatchRequest,
};
use tokio_stream::StreamExt;

use crate::support::*;

/// GET a path from a node's metrics listener (plain HTTP/1.1).
pub(crate) fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// The value of one sample line of `/metrics`, e.g. `hanoi247_overdue_requests{side="receiver"}`.
pub(crate) fn metric(port: u16, sample: &str) -> Option<f64> {
    let (_, body) = http_get(port, "/metrics");
    body.lines().find_map(|line| line.strip_prefix(sample)?.trim().parse().ok())
}

async fn eventually_metric(port: u16, sample: &str, want: f64) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let got = tokio::task::spawn_blocking({
            let sample = sample.to_owned();
            move || metric(port, &sample)
        })
        .await
        .unwrap();
        if got == Some(want) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{sample} is {got:?}, want {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) fn cli_json(args: &[&str]) -> serde_json::Value {
    let output = Command::new(env!("CARGO_BIN_EXE_hanoi247")).args(args).output().unwrap();
    assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unacknowledged_flash_request_becomes_overdue_at_both_ends() {
    let mut net = Network::new(&["VN", "FR"]).await;
    for node in ["VN", "FR"] {
        net.edit_config(node, "flash = \"15m\"", "flash = \"1s\"");
        net.start(node).await;
    }
    let (mut vn, mut fr) = (net.desk("VN"), net.desk("FR"));
    let mut fr_events = fr.watch(WatchRequest { after_sequence: None }).await.unwrap().into_inner();
    let id = submit(&mut vn, preservation_request("FR")).await;
    let received = wait_state(&mut fr, &id, MessageState::Received).await;
    assert!(received.ack_deadline.is_some());

    // The Watch event at the receiver.
    let overdue_event = tokio::time::timeout(DEADLINE, async {
        while let Some(event) = fr_events.next().await {
            let event = event.unwrap();
            if event.overdue {
                return event;
            }
        }
        panic!("watch ended");
    })
    .await
    .expect("an overdue event within the deadline");
    assert_eq!(overdue_event.message_id, id);
    assert_eq!(overdue_event.state(), MessageState::Received);
    assert_eq!(overdue_event.peer, "VN");

    // The metric, scraped over HTTP, at both ends.
    let (fr_metrics, vn_metrics) =
        (net.config("FR").metrics.listen.port(), net.config("VN").metrics.listen.port());
    eventually_metric(fr_metrics, "hanoi247_overdue_requests{side=\"receiver\"}", 1.0).await;
    eventually_metric(vn_metrics, "hanoi247_overdue_requests{side=\"sender\"}", 1.0).await;

    // The CLI's JSON, at both ends.
    let fr_client = net.client_config_path("FR");
    let listed = cli_json(&["inbox", "--config", fr_client.to_str().unwrap(), "--overdue", "--json"]);
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["envelope"]["id"], id.as_str());
    assert_eq!(listed[0]["overdue"], true);
    let vn_client = net.client_config_path("VN");
    let sent = cli_json(&["outbox", "--config", vn_client.to_str().unwrap(), "--overdue", "--json"]);
    assert_eq!(sent.as_array().unwrap().len(), 1, "{sent:?}");

    // Acknowledging ends it.
    fr.acknowledge(AcknowledgeRequest { id: id.clone(), note: String::new() }).await.unwrap();
    eventually_metric(fr_metrics, "hanoi247_overdue_requests{side=\"receiver\"}", 0.0).await;
    wait_state(&mut vn, &id, MessageState::Acknowledged).await;
    eventually_metric(vn_metrics, "hanoi247_overdue_requests{side=\"sender\"}", 0.0).await;
    let after = cli_json(&["inbox", "--config", fr_client.to_str().unwrap(), "--overdue", "--json"]);
    assert!(after.as_array().unwrap().is_empty());
    assert_eq!(http_get(fr_metrics, "/healthz").0, 200);
    assert_eq!(http_get(fr_metrics, "/readyz").0, 200);
    net.stop("VN").await;
    net.stop("FR").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resumes_across_a_node_restart_without_gaps_or_repeats() {
    let mut net = Network::new(&["VN", "FR"]).await;
    let vn_process = net.spawn("VN").await;
    let client = net.client_config_path("VN");
    let mut watcher = Command::new(env!("CARGO_BIN_EXE_hanoi247"))
        .args(["watch", "--json", "--after", "0", "--config", client.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (lines, mut seen) = tokio::sync::mpsc::unbounded_channel::<serde_json::Value>();
    let stdout = watcher.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = lines.send(serde_json::from_str(&line).unwrap());
        }
    });
    let mut events = Vec::new();
    let mut collect_until = async |events: &mut Vec<serde_json::Value>, count: usize| {
        while events.len() < count {
            let event = tokio::time::timeout(DEADLINE, seen.recv()).await.expect("watcher output").unwrap();
            events.push(event);
        }
    };

    let mut vn = net.desk("VN");
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(submit(&mut vn, advice_request("FR", Precedence::Routine, &format!("before {i}"))).await);
    }
    collect_until(&mut events, 3).await;

    vn_process.kill9();
    let vn_process = net.spawn("VN").await;
    let mut vn = net.desk("VN");
    for i in 0..2 {
        ids.push(submit(&mut vn, advice_request("FR", Precedence::Priority, &format!("after {i}"))).await);
    }
    net.start("FR").await;
    for id in &ids {
        wait_state(&mut vn, id, MessageState::Delivered).await;
    }

    // The node's own record of every event, from the first.
    let mut stored = Vec::new();
    let mut replay = vn.watch(WatchRequest { after_sequence: Some(0) }).await.unwrap().into_inner();
    let delivered: HashSet<&String> = ids.iter().collect();
    let mut delivered_seen = HashSet::new();
    while delivered_seen.len() < delivered.len() {
        let event = tokio::time::timeout(DEADLINE, replay.next()).await.unwrap().unwrap().unwrap();
        if event.state() == MessageState::Delivered {
            delivered_seen.insert(event.message_id.clone());
        }
        stored.push(event);
    }
    collect_until(&mut events, stored.len()).await;

    let sequences: Vec<u64> = events.iter().map(|e| e["sequence"].as_u64().unwrap()).collect();
    let expected: Vec<u64> = (1..=stored.len() as u64).collect();
    assert_eq!(sequences[..stored.len()], expected[..], "every event once, in order, across the restart");
    for (printed, stored) in events.iter().zip(&stored) {
        assert_eq!(printed["message_id"], stored.message_id.as_str());
        assert_eq!(printed["state"], hanoi247::domain::lifecycle::state_name(stored.state()));
    }
    let _ = watcher.kill();
    let _ = watcher.wait();
    drop(vn_process);
    net.stop("FR").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_answer_on_both_listeners() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let mut net = Network::new(&["VN", "FR"]).await;
    net.start("VN").await;
    let desk =
        hanoi247::cli::desk_client::channel(&ClientConfig::load(&net.client_config_path("VN")).unwrap())
            .unwrap();
    let peer = net.peer_channel("FR", "VN");
    for (listener, channel, service) in
        [("desk", desk, "hanoi247.v1.DeskService"), ("peer", peer, "hanoi247.v1.PeerService")]
    {
        let mut health = HealthClient::new(channel.clone());
        for name in ["", service] {
            let status =
                health.check(HealthCheckRequest { service: name.into() }).await.unwrap().into_inner();
            assert_eq!(status.status(), ServingStatus::Serving, "{listener} listener, service '{name}'");
        }
        let mut reflection = ServerReflectionClient::new(channel);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut responses =
            reflection.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
        let response = responses.next().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
            panic!("{listener}: not a service list: {response:?}");
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        assert!(names.iter().any(|n| n == service), "{listener}: {names:?}");
        assert!(names.iter().any(|n| n == "grpc.health.v1.Health"), "{listener}: {names:?}");
    }
    net.stop("VN").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_and_peers_show_a_down_peer_and_a_live_one() {
    let mut net = Network::new(&["VN", "FR", "DE"]).await;
    net.start("VN").await;
    net.start("DE").await;
    let mut vn = net.desk("VN");
    let waiting = submit(&mut vn, advice_request("FR", Precedence::Flash, "to the down peer")).await;
    submit(&mut vn, advice_request("FR", Precedence::Routine, "also waiting")).await;
    wait_state(&mut vn, &waiting, MessageState::WaitingRetry).await;
    let delivered = submit(&mut vn, advice_request("DE", Precedence::Immediate, "to the live peer")).await;
    wait_state(&mut vn, &delivered, MessageState::Delivered).await;

    let mut vn_operator = net.desk_as("VN", "operator");
    let queue = vn_operator.get_queue(GetQueueRequest {}).await.unwrap().into_inner().peers;
    let fr = queue.iter().find(|q| q.peer == "FR").unwrap();
    assert_eq!((fr.flash, fr.immediate, fr.priority, fr.routine), (1, 0, 0, 1));
    assert!(fr.failures >= 1 && !fr.last_error.is_empty(), "{fr:?}");
    assert_eq!(fr.connection(), hanoi247::proto::ConnectionState::Failing);
    assert!(fr.oldest_created_at.is_some());
    let de = queue.iter().find(|q| q.peer == "DE").unwrap();
    assert_eq!((de.flash, de.immediate, de.priority, de.routine), (0, 0, 0, 0));
    assert_eq!(de.connection(), hanoi247::proto::ConnectionState::Connected);

    let peers = vn_operator.list_peers(ListPeersRequest {}).await.unwrap().into_inner();
    let de = peers.peers.iter().find(|p| p.peer == "DE").unwrap();
    assert!(de.certificate_expires_at.is_some() && de.last_contact_at.is_some(), "{de:?}");
    assert!(peers.own_certificate_expires_at.is_some());
    assert!(peers.warnings.is_empty(), "certificates from init last a year: {:?}", peers.warnings);

    let client = net.client_config_path_of("VN", "operator");
    let json = cli_json(&["queue", "--config", client.to_str().unwrap(), "--json"]);
    let fr_json = json.as_array().unwrap().iter().find(|q| q["peer"] == "FR").unwrap();
    assert_eq!(fr_json["queued"]["FLASH"], 1);
    assert_eq!(fr_json["connection"], "FAILING");
    net.stop("VN").await;
    net.stop("DE").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_stops_reading_does_not_keep_the_node_from_stopping() {
    let mut net = Network::new(&["VN", "FR"]).await;
    net.start("VN").await;
    let mut vn = net.desk("VN");
    // Opened and never read again: its buffers fill up while the node keeps working.
    let stalled = vn.watch(WatchRequest { after_sequence: Some(0) }).await.unwrap().into_inner();
    for i in 0..1500 {
        let mut request = advice_request("FR", Precedence::Routine, &format!("event {i}"));
        request.body = "x".repeat(512);
        submit(&mut vn, request).await;
    }
    let stopped = tokio::time::timeout(DEADLINE, net.stop("VN")).await;
    assert!(stopped.is_ok(), "the node did not stop within {DEADLINE:?}");
    drop(stalled);
}

/// Events older than `[retention] events` are removed by the running node. A watcher resuming
/// from before them gets OUT_OF_RANGE naming the removed range (never a silent gap), a watcher
/// from now misses nothing, and the messages keep their whole timelines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_events_are_removed_and_a_watcher_behind_them_is_told() {
    let mut net = Network::new(&["VN", "FR"]).await;
    net.edit_config("VN", "events = \"30days\"", "events = \"1s\"");
    net.edit_config("VN", "interval = \"1h\"", "interval = \"100ms\"");
    net.start("FR").await;
    net.start("VN").await;
    let mut vn = net.desk("VN");
    let first = submit(&mut vn, preservation_request("FR")).await;
    wait_state(&mut vn, &first, MessageState::Delivered).await;

    eventually("events older than 1 s are removed", async || {
        vn.watch(WatchRequest { after_sequence: Some(0) }).await.is_err()
    })
    .await;
    let refused = vn.watch(WatchRequest { after_sequence: Some(0) }).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::OutOfRange, "{refused:?}");
    assert!(
        refused.message().starts_with("after_sequence: events 1 to ")
            && refused.message().contains("retention"),
        "{}",
        refused.message()
    );
    let message =
        vn.get(hanoi247::proto::GetRequest { id: first }).await.unwrap().into_inner().message.unwrap();
    assert_eq!(
        states(&message),
        vec![MessageState::Queued, MessageState::Delivered],
        "the message keeps its timeline"
    );
    let (_, metrics) = http_get(net.config("VN").metrics.listen.port(), "/metrics");
    assert!(metrics.contains("hanoi247_events_pruned_total"), "{metrics}");

    // From now on, nothing is missed.
    let mut events = vn.watch(WatchRequest { after_sequence: None }).await.unwrap().into_inner();
    let second = submit(&mut vn, preservation_request("FR")).await;
    let event = tokio::time::timeout(DEADLINE, events.next()).await.unwrap().unwrap().unwrap();
    assert_eq!((event.message_id.as_str(), event.state()), (second.as_str(), MessageState::Queued));

    // `hanoi247 watch --after 0` says what was removed, then follows what happens from now.
    let client = net.client_config_path("VN");
    let mut watcher = Command::new(env!("CARGO_BIN_EXE_hanoi247"))
        .args(["watch", "--json", "--after", "0", "--config", client.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines, mut said) = tokio::sync::mpsc::unbounded_channel::<String>();
    for output in [
        Box::new(watcher.stdout.take().unwrap()) as Box<dyn Read + Send>,
        Box::new(watcher.stderr.take().unwrap()),
    ] {
        let lines = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(output).lines() {
                let Ok(line) = line else { break };
                let _ = lines.send(line);
            }
        });
    }
    let mut next_line =
        async || tokio::time::timeout(DEADLINE, said.recv()).await.expect("watch output").unwrap();
    // Output and error are two pipes: skip any event line that a reader thread passed on first.
    let notice = loop {
        let line = next_line().await;
        if !line.starts_with('{') {
            break line;
        }
    };
    assert!(
        notice.contains("were removed after the retention period")
            && notice.contains("continuing with new events"),
        "{notice}"
    );
    let third = submit(&mut vn, preservation_request("FR")).await;
    let printed: serde_json::Value = loop {
        // Events of the second request may still come (its delivery); skip to the third's.
        let line = next_line().await;
        let event: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("{line}"));
        if event["message_id"] == third.as_str() {
            break event;
        }
    };
    assert_eq!(printed["state"], "QUEUED", "{printed}");
    watcher.kill().unwrap();
    watcher.wait().unwrap();
    net.stop("VN").await;
    net.stop("FR").await;
}
