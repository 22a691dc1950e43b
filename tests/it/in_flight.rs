//! Issue 4 (in-flight recovery): a sender killed between sending an envelope and receiving its
//! receipt finds it still queued after the restart, sends it again, and the receiver answers
//! with the original receipt: stored once, delivered once.

use std::time::Duration;

use hanoi247::proto::{ListPeersRequest, MessageState, WatchRequest};
use tokio_stream::StreamExt;

use crate::support::proxy::{Fault, Proxy};
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_killed_between_send_and_receipt_resends_and_the_receiver_keeps_one() {
    let mut net = Network::new(&["VN", "FR"]).await;
    net.start("FR").await;
    let fr_peer = std::net::SocketAddr::from(([127, 0, 0, 1], net.config("FR").listen.peer.port()));
    let proxy = Proxy::start(fr_peer).await;
    net.route_peer("VN", "FR", &format!("127.0.0.1:{}", proxy.port()));
    let vn_process = net.spawn("VN").await;

    // Wait until VN holds a live connection to FR (its Hello), then slow that connection down:
    // the envelope reaches FR after a while, and its receipt would come back only later still.
    let mut operator = net.desk_as("VN", "operator");
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let peers = operator.list_peers(ListPeersRequest {}).await.unwrap().into_inner().peers;
        if peers.iter().any(|p| p.peer == "FR" && p.last_contact_at.is_some()) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "VN never reached FR");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    proxy.set(Fault::Delay(Duration::from_millis(1500)));

    let mut fr = net.desk("FR");
    let mut fr_events = fr.watch(WatchRequest { after_sequence: None }).await.unwrap().into_inner();
    let mut vn = net.desk("VN");
    let id = submit(&mut vn, preservation_request("FR")).await;
    // FR has it on disk; VN's receipt is still on its way back through the slow proxy: kill VN now.
    loop {
        let event = tokio::time::timeout(DEADLINE, fr_events.next()).await.unwrap().unwrap().unwrap();
        if event.message_id == id && event.state() == MessageState::Received {
            break;
        }
    }
    vn_process.kill9();

    proxy.set(Fault::Pass);
    let _vn_process = net.spawn("VN").await;
    let mut vn = net.desk("VN");
    let delivered = wait_state(&mut vn, &id, MessageState::Delivered).await;
    let receipt = &delivered.timeline.last().unwrap().note;
    assert!(receipt.contains("duplicate"), "the resend got the original receipt again: {receipt}");
    assert_eq!(ids(&inbox(&mut fr).await), vec![id], "stored once at FR");
    net.stop("FR").await;
}
