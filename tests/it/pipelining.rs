//! Several `Deliver` batches in flight per peer (issue 9), stored in the order they were sent
//! (guarantee 4), and the receiver's refusals when a batch of a session goes missing.

use hanoi247::proto::delivery_result::Outcome;
use hanoi247::proto::{DeliverRequest, Envelope, GetRequest, MessageState, Precedence};
use tonic::Code;

use crate::support::*;

/// Stores `count` requests at VN while FR is down and returns their envelopes, in queue order.
async fn envelopes_made_by_vn(net: &mut Network, count: usize) -> Vec<Envelope> {
    net.start("VN").await;
    let mut vn = net.desk("VN");
    let mut envelopes = Vec::new();
    for i in 0..count {
        let id = submit(&mut vn, advice_request("FR", Precedence::Routine, &format!("request {i}"))).await;
        let message = vn.get(GetRequest { id }).await.unwrap().into_inner().message.unwrap();
        envelopes.push(message.envelope.unwrap());
    }
    net.stop("VN").await;
    envelopes
}

fn batch(envelopes: &[Envelope], session: &str, number: u64) -> DeliverRequest {
    DeliverRequest {
        envelopes: envelopes.to_vec(),
        sender_session: session.into(),
        batch_number: number,
        answered_through: 0,
        accepts_batch_receipts: false,
    }
}

fn receipted(response: &hanoi247::proto::DeliverResponse) -> bool {
    response.results.iter().all(|r| matches!(r.outcome, Some(Outcome::Receipt(_))))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_sent_out_of_order_are_stored_in_the_order_of_their_numbers() {
    let mut net = Network::new(&["VN", "FR"]).await;
    let envelopes = envelopes_made_by_vn(&mut net, 3).await;
    net.start("FR").await;
    let session = uuid::Uuid::now_v7().to_string();

    // Batches 3 and 2 go first; FR holds them until batch 1 is stored.
    let mut calls = Vec::new();
    for number in [3u64, 2] {
        let mut as_vn = net.peer_client("VN", "FR");
        let request = batch(&envelopes[number as usize - 1..number as usize], &session, number);
        calls.push(tokio::spawn(async move { as_vn.deliver(request).await }));
    }
    let first = net.peer_client("VN", "FR").deliver(batch(&envelopes[..1], &session, 1)).await.unwrap();
    assert!(receipted(first.get_ref()));
    for call in calls {
        assert!(receipted(call.await.unwrap().unwrap().get_ref()));
    }
    let mut fr = net.desk("FR");
    // The inbox lists newest first.
    let sent: Vec<String> = envelopes.iter().rev().map(|e| e.id.clone()).collect();
    assert_eq!(ids(&inbox(&mut fr).await), sent);
    net.stop("FR").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_predecessor_never_comes_is_refused_and_its_session_stays_closed() {
    let mut net = Network::new(&["VN", "FR"]).await;
    let envelopes = envelopes_made_by_vn(&mut net, 2).await;
    net.start("FR").await;
    let mut as_vn = net.peer_client("VN", "FR");
    let mut fr = net.desk("FR");
    let session = uuid::Uuid::now_v7().to_string();

    let refused = as_vn.deliver(batch(&envelopes[1..], &session, 2)).await.unwrap_err();
    assert_eq!(refused.code(), Code::Aborted, "{refused:?}");
    assert!(refused.message().contains("batch 1 never arrived"), "{}", refused.message());
    assert!(inbox(&mut fr).await.is_empty(), "nothing stored");

    // The late batch 1 of that session is refused too: it would now be overtaken.
    let late = as_vn.deliver(batch(&envelopes[..1], &session, 1)).await.unwrap_err();
    assert_eq!(late.code(), Code::Aborted, "{late:?}");
    assert!(inbox(&mut fr).await.is_empty(), "nothing stored");

    let bad = as_vn.deliver(batch(&envelopes[..1], "not-a-uuid", 1)).await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument, "{bad:?}");
    assert!(bad.message().starts_with("sender_session"), "{}", bad.message());
    assert!(inbox(&mut fr).await.is_empty(), "nothing stored");

    // A new session starts clean and keeps the order.
    let fresh = uuid::Uuid::now_v7().to_string();
    assert!(receipted(as_vn.deliver(batch(&envelopes[..1], &fresh, 1)).await.unwrap().get_ref()));
    assert!(receipted(as_vn.deliver(batch(&envelopes[1..], &fresh, 2)).await.unwrap().get_ref()));
    let sent: Vec<String> = envelopes.iter().rev().map(|e| e.id.clone()).collect();
    assert_eq!(ids(&inbox(&mut fr).await), sent);
    net.stop("FR").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_sent_in_small_pipelined_batches_arrives_in_queue_order() {
    let mut net = Network::new(&["VN", "FR"]).await;
    // Two envelopes per batch, four batches in flight: a backlog of 40 needs many overlapping calls.
    net.edit_config("VN", "batch_size = 64", "batch_size = 2");
    net.start("VN").await;
    let mut vn = net.desk("VN");
    let mut flash = Vec::new();
    let mut routine = Vec::new();
    for i in 0..40 {
        if i % 4 == 3 {
            flash.push(submit(&mut vn, advice_request("FR", Precedence::Flash, &format!("flash {i}"))).await);
        } else {
            routine.push(
                submit(&mut vn, advice_request("FR", Precedence::Routine, &format!("routine {i}"))).await,
            );
        }
    }
    net.start("FR").await;
    for id in flash.iter().chain(&routine) {
        wait_state(&mut vn, id, MessageState::Delivered).await;
    }
    let mut fr = net.desk("FR");
    let mut expected: Vec<String> = flash.into_iter().chain(routine).collect();
    expected.reverse();
    assert_eq!(ids(&inbox(&mut fr).await), expected, "FR stored the backlog in VN's queue order");
    net.stop("VN").await;
    net.stop("FR").await;
}

/// A receiver that restarted does not know the sender's session. The sender says how far the
/// session was answered, so the next batch is stored at once instead of waiting for (and being
/// refused for lack of) batches the previous process stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_receiver_restarts_the_next_batch_of_a_session_goes_through_at_once() {
    let mut net = Network::new(&["VN", "FR"]).await;
    net.start("FR").await;
    net.start("VN").await;
    let mut vn = net.desk("VN");
    let first = submit(&mut vn, advice_request("FR", Precedence::Routine, "before")).await;
    wait_state(&mut vn, &first, MessageState::Delivered).await;

    net.stop("FR").await;
    net.start("FR").await;
    let second = submit(&mut vn, advice_request("FR", Precedence::Flash, "after")).await;
    let delivered = wait_state(&mut vn, &second, MessageState::Delivered).await;
    let notes: Vec<&str> = delivered.timeline.iter().map(|entry| entry.note.as_str()).collect();
    assert!(!notes.iter().any(|note| note.contains("never arrived")), "{notes:?}");
    assert_eq!(delivered.attempts, 0, "delivered at the first attempt: {notes:?}");
    net.stop("VN").await;
    net.stop("FR").await;
}
