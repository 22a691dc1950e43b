//! Issues 19 and 20: status that is current. A peer's last error carries its time, and once a
//! later call succeeded the queue view, `peers` and `queue` show it as past, never beside
//! CONNECTED as if current; a peer that calls this node is probed at once, so `peers` does not
//! show it FAILING after it has delivered.

use std::process::Command;
use std::time::Duration;

use hanoi247::domain::timestamp::to_system;
use hanoi247::proto::{ConnectionState, GetQueueRequest, ListPeersRequest, MessageState, Precedence};

use crate::support::*;

fn cli(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_hanoi247")).args(args).output().unwrap();
    assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_before_a_later_delivery_is_shown_as_past() {
    let mut net = Network::new(&["VN", "FR"]).await;
    net.start("VN").await;
    net.start("FR").await;
    let mut vn = net.desk("VN");
    let first = submit(&mut vn, advice_request("FR", Precedence::Flash, "before")).await;
    wait_state(&mut vn, &first, MessageState::Delivered).await;

    net.stop("FR").await;
    let waiting = submit(&mut vn, advice_request("FR", Precedence::Flash, "while FR is down")).await;
    wait_state(&mut vn, &waiting, MessageState::WaitingRetry).await;
    let mut operator = net.desk_as("VN", "operator");
    let queue = operator.get_queue(GetQueueRequest {}).await.unwrap().into_inner().peers;
    let fr = queue.iter().find(|q| q.peer == "FR").unwrap().clone();
    assert_eq!(fr.connection(), ConnectionState::Failing, "{fr:?}");
    let failed_at = to_system(fr.last_error_at.as_ref().expect("the error carries its time"));
    assert!(!fr.last_error.is_empty());
    assert!(failed_at > to_system(fr.last_success_at.as_ref().unwrap()), "the error is current: {fr:?}");
    let client = net.client_config_path_of("VN", "operator");
    let client = client.to_str().unwrap();
    let table = cli(&["queue", "--config", client]);
    assert!(table.contains("since ") && !table.contains("before the last success"), "{table}");

    net.start("FR").await;
    wait_state(&mut vn, &waiting, MessageState::Delivered).await;
    let queue = operator.get_queue(GetQueueRequest {}).await.unwrap().into_inner().peers;
    let fr = queue.iter().find(|q| q.peer == "FR").unwrap().clone();
    assert_eq!(fr.connection(), ConnectionState::Connected, "{fr:?}");
    assert!(!fr.last_error.is_empty(), "the error is kept, as past: {fr:?}");
    let error_at = to_system(fr.last_error_at.as_ref().unwrap());
    let success_at = to_system(fr.last_success_at.as_ref().unwrap());
    assert!(error_at >= failed_at && error_at <= success_at, "{fr:?}");

    let table = cli(&["queue", "--config", client]);
    let row = table.lines().find(|l| l.starts_with("FR ")).unwrap();
    assert!(
        row.contains("CONNECTED")
            && row.contains("last error ")
            && row.contains("before the last success at"),
        "{row}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&cli(&["queue", "--config", client, "--json"])).unwrap();
    let fr_json = json.as_array().unwrap().iter().find(|q| q["peer"] == "FR").unwrap();
    assert_eq!(fr_json["last_error_is_past"], true, "{fr_json}");
    assert_eq!(fr_json["connection"], "CONNECTED");

    let peers = operator.list_peers(ListPeersRequest {}).await.unwrap().into_inner();
    let fr = peers.peers.iter().find(|p| p.peer == "FR").unwrap();
    assert_eq!(fr.connection(), ConnectionState::Connected);
    assert!(to_system(fr.last_error_at.as_ref().unwrap()) <= to_system(fr.last_contact_at.as_ref().unwrap()));
    let table = cli(&["peers", "--config", client]);
    let fr_rows: Vec<&str> = table.lines().skip_while(|l| !l.starts_with("FR ")).take(2).collect();
    assert!(fr_rows[0].contains("CONNECTED") && fr_rows[1].contains("before the last success at"), "{table}");
    let json: serde_json::Value =
        serde_json::from_str(&cli(&["peers", "--config", client, "--json"])).unwrap();
    let fr_json = json["peers"].as_array().unwrap().iter().find(|p| p["peer"] == "FR").unwrap();
    assert_eq!(fr_json["last_error_is_past"], true, "{fr_json}");
    net.stop("VN").await;
    net.stop("FR").await;
}

/// VN's idle probe of FR failed (next probe in 30 s); FR comes up and delivers to VN: VN probes
/// FR at once and `peers` shows it CONNECTED well before that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_delivered_is_not_shown_failing() {
    let mut net = Network::new(&["VN", "FR"]).await;
    net.start("VN").await;
    let mut operator = net.desk_as("VN", "operator");
    eventually("VN sees FR failing", async || {
        let peers = operator.list_peers(ListPeersRequest {}).await.unwrap().into_inner();
        peers.peers.iter().any(|p| p.peer == "FR" && p.connection() == ConnectionState::Failing)
    })
    .await;
    net.start("FR").await;
    let mut fr = net.desk("FR");
    let sent = submit(&mut fr, advice_request("VN", Precedence::Routine, "FR is back")).await;
    wait_state(&mut fr, &sent, MessageState::Delivered).await;
    let delivered = tokio::time::Instant::now();
    loop {
        let peers = operator.list_peers(ListPeersRequest {}).await.unwrap().into_inner();
        let status = peers.peers.iter().find(|p| p.peer == "FR").unwrap().clone();
        if status.connection() == ConnectionState::Connected {
            break;
        }
        // Well under the 30 s between idle probes: without the probe on contact this fails.
        assert!(
            delivered.elapsed() < Duration::from_secs(10),
            "FR still shown {status:?} after it delivered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    net.stop("VN").await;
    net.stop("FR").await;
}
