//! Issue 4: one focused test per network fault between a sender and a receiver, each asserting
//! the exact state afterwards: nothing stored twice, nothing lost, the error visible meanwhile.

use std::time::Duration;

use hanoi247::proto::{GetRequest, ListPeersRequest, MessageState, Precedence};

use crate::support::proxy::{Fault, Flow, Proxy};
use crate::support::*;

/// VN (a child process) reaches FR (in-process) only through a proxy; VN has said Hello.
async fn through_proxy() -> (Network, Proxy, ChildNode) {
    let mut net = Network::new(&["VN", "FR"]).await;
    net.start("FR").await;
    let fr_peer = std::net::SocketAddr::from(([127, 0, 0, 1], net.config("FR").listen.peer.port()));
    let proxy = Proxy::start(fr_peer).await;
    net.route_peer("VN", "FR", &format!("127.0.0.1:{}", proxy.port()));
    // A hung call must fail in seconds, not the production ten.
    net.edit_config("VN", "request_timeout = \"10s\"", "request_timeout = \"2s\"");
    let vn = net.spawn("VN").await;
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
    (net, proxy, vn)
}

/// Under `fault`, a request waits (WAITING_RETRY, the error kept) and FR has nothing; once the
/// fault is lifted it is delivered and FR holds it exactly once.
async fn waits_then_delivered_once(fault: Fault, error_hint: &str) {
    let (mut net, proxy, _vn) = through_proxy().await;
    proxy.set(fault.clone());
    let mut vn = net.desk("VN");
    let mut request = advice_request("FR", Precedence::Flash, "through a faulty network");
    request.body = "b".repeat(20_000);
    let id = submit(&mut vn, request).await;
    let waiting = wait_state(&mut vn, &id, MessageState::WaitingRetry).await;
    assert!(waiting.last_error.contains(error_hint), "{fault:?}: {}", waiting.last_error);
    let mut fr = net.desk("FR");
    assert!(inbox(&mut fr).await.is_empty(), "{fault:?}: nothing reached FR");

    proxy.set(Fault::Pass);
    wait_state(&mut vn, &id, MessageState::Delivered).await;
    assert_eq!(ids(&inbox(&mut fr).await), vec![id], "{fault:?}: delivered exactly once");
    net.stop("FR").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_leaves_the_request_waiting_until_it_is_accepted() {
    waits_then_delivered_once(Fault::Refuse, "Unavailable").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_cut_mid_request_stores_nothing_and_the_request_is_sent_again() {
    // Each new connection: about 2 KB of handshake, then the 20 KB request is cut halfway.
    waits_then_delivered_once(Fault::CutAfter { bytes: 12_000, direction: Flow::ClientToServer }, "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_cut_mid_response_stores_once_and_the_resend_gets_the_original_receipt() {
    let (mut net, proxy, _vn) = through_proxy().await;
    // Slow the live connection, so FR's answer is still inside the proxy when FR has stored the
    // envelope; then cut the connection: the receipt is lost on the way.
    proxy.set(Fault::Delay(Duration::from_millis(1500)));
    let mut vn = net.desk("VN");
    let id = submit(&mut vn, advice_request("FR", Precedence::Flash, "its receipt is lost")).await;
    let mut fr = net.desk("FR");
    wait_state(&mut fr, &id, MessageState::Received).await;
    proxy.set(Fault::Refuse);
    let waiting = wait_state(&mut vn, &id, MessageState::WaitingRetry).await;
    assert!(!waiting.last_error.is_empty());
    assert_eq!(ids(&inbox(&mut fr).await), vec![id.clone()], "stored at FR while VN waits");

    proxy.set(Fault::Pass);
    let delivered = wait_state(&mut vn, &id, MessageState::Delivered).await;
    assert!(delivered.timeline.last().unwrap().note.contains("duplicate"), "{:?}", delivered.timeline);
    assert_eq!(ids(&inbox(&mut fr).await), vec![id], "stored once");
    net.stop("FR").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_network_delays_but_delivers_once() {
    let (mut net, proxy, _vn) = through_proxy().await;
    proxy.set(Fault::Delay(Duration::from_millis(200)));
    let mut vn = net.desk("VN");
    let id = submit(&mut vn, advice_request("FR", Precedence::Immediate, "over a slow line")).await;
    let delivered = wait_state(&mut vn, &id, MessageState::Delivered).await;
    assert!(
        delivered.last_error.is_empty(),
        "a slow but working network is no error: {}",
        delivered.last_error
    );
    let mut fr = net.desk("FR");
    assert_eq!(ids(&inbox(&mut fr).await), vec![id.clone()]);
    let at_fr = fr.get(GetRequest { id }).await.unwrap().into_inner().message.unwrap();
    assert_eq!(at_fr.state(), MessageState::Received);
    net.stop("FR").await;
}

/// A request withdrawn while its batch is in a `Deliver` call — the peer has stored it, its
/// receipt is still on the way back — is withdrawn at the peer too: the cancellation follows
/// it. (It used to count as never sent, leaving the peer a live request its origin showed
/// CANCELLED.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_cancelled_while_its_delivery_is_in_flight_is_cancelled_at_the_peer_too() {
    let mut net = Network::new(&["VN", "FR"]).await;
    net.start("FR").await;
    let fr_peer = std::net::SocketAddr::from(([127, 0, 0, 1], net.config("FR").listen.peer.port()));
    let proxy = Proxy::start(fr_peer).await;
    net.route_peer("VN", "FR", &format!("127.0.0.1:{}", proxy.port()));
    net.start("VN").await;
    let mut vn = net.desk("VN");
    let mut fr = net.desk("FR");
    // Every chunk held 1.5 s each way: FR stores the request seconds before VN hears of it.
    proxy.set(Fault::Delay(Duration::from_millis(1_500)));
    let id = submit(&mut vn, advice_request("FR", Precedence::Routine, "sent in error")).await;
    wait_state(&mut fr, &id, MessageState::Received).await;
    let mut operator = net.desk_as("VN", "operator");
    let request = hanoi247::proto::CancelRequest { id: id.clone(), reason: "sent in error".into() };
    let cancelled = operator.cancel(request).await.unwrap().into_inner().message.unwrap();
    assert!(
        !states(&cancelled).contains(&MessageState::Delivered),
        "cancelled while the receipt was still on its way: {:?}",
        states(&cancelled)
    );
    proxy.set(Fault::Pass);
    wait_state(&mut fr, &id, MessageState::Cancelled).await;
}

/// A request withdrawn before its batch left is not sent at all, and FR hears nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_cancelled_before_it_left_is_never_sent() {
    let (mut net, proxy, _vn) = through_proxy().await;
    proxy.set(Fault::Refuse);
    let mut vn = net.desk("VN");
    let id = submit(&mut vn, advice_request("FR", Precedence::Routine, "withdrawn at once")).await;
    wait_state(&mut vn, &id, MessageState::WaitingRetry).await;
    let mut operator = net.desk_as("VN", "operator");
    let request = hanoi247::proto::CancelRequest { id: id.clone(), reason: "withdrawn".into() };
    operator.cancel(request).await.unwrap();
    let later = advice_request("FR", Precedence::Routine, "sent after it");
    proxy.set(Fault::Pass);
    let after = submit(&mut vn, later).await;
    wait_state(&mut vn, &after, MessageState::Delivered).await;
    let mut fr = net.desk("FR");
    assert_eq!(ids(&inbox(&mut fr).await), vec![after], "the withdrawn request never reached FR");
    net.stop("FR").await;
}
