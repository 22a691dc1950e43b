//! Acceptance 3, 4, 5, 7: waiting for a down peer, duplicates, crash recovery, precedence.

use hanoi247::proto::delivery_result::Outcome;
use std::time::{Duration, SystemTime};

use hanoi247::cli::desk_client::wait_for_state;
use hanoi247::proto::{DeliverRequest, GetRequest, MessageState, Precedence};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_peer_gets_the_message_once_when_it_returns() {
    let mut net = Network::new(&["VN", "FR"]).await;
    net.start("VN").await;
    let mut vn = net.desk("VN");
    let id = submit(&mut vn, preservation_request("FR")).await;

    let waiting = wait_state(&mut vn, &id, MessageState::WaitingRetry).await;
    assert!(waiting.attempts >= 1);
    assert!(
        waiting.last_error.contains("Unavailable") || waiting.last_error.contains("refused"),
        "{}",
        waiting.last_error
    );
    assert!(waiting.next_attempt_at.is_some());

    net.start("FR").await;
    let delivered = wait_state(&mut vn, &id, MessageState::Delivered).await;
    assert!(!delivered.last_error.is_empty(), "the last error is kept for the record");
    let mut fr = net.desk("FR");
    assert_eq!(ids(&inbox(&mut fr).await), vec![id]);
    net.stop("VN").await;
    net.stop("FR").await;
}

/// A FLASH request does not wait out a backoff that ordinary traffic started: the peer may be
/// back, and the next scheduled attempt up to `retry_max` (a minute) away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_urgent_request_is_tried_at_once_while_the_peer_is_in_backoff() {
    let mut net = Network::new(&["VN", "FR"]).await;
    // Production backoffs, so only the urgent wake-up can explain a delivery within seconds.
    net.edit_config("VN", "retry_initial = \"100ms\"", "retry_initial = \"60s\"");
    net.edit_config("VN", "retry_max = \"500ms\"", "retry_max = \"60s\"");
    net.start("VN").await;
    let mut vn = net.desk("VN");
    let routine = submit(&mut vn, advice_request("FR", Precedence::Routine, "routine")).await;

    // The backoff is drawn from [bound/2, bound], the bound doubling from 60 s (capped at 60 s), so
    // the first draw is at least 30 s away; a short draw would be let run out (the attempt fails
    // again and draws anew) until the next attempt is at least 20 s away.
    let far = Duration::from_secs(20);
    let mut retry_at = None;
    for _ in 0..10 {
        let waiting = wait_state(&mut vn, &routine, MessageState::WaitingRetry).await;
        let next = hanoi247::domain::timestamp::to_system(&waiting.next_attempt_at.expect("a retry time"));
        if next > SystemTime::now() + far {
            retry_at = Some(next);
            break;
        }
        eventually("the short backoff runs out and the attempt fails again", async || {
            let now = vn.get(GetRequest { id: routine.clone() }).await.unwrap().into_inner().message.unwrap();
            now.attempts > waiting.attempts
        })
        .await;
    }
    let retry_at = retry_at.expect("ten draws of [0, 60 s] all under 20 s");

    net.start("FR").await;
    let flash = submit(&mut vn, advice_request("FR", Precedence::Flash, "flash")).await;
    let delivered = wait_for_state(&mut vn, &flash, MessageState::Delivered, Duration::from_secs(10)).await;
    assert!(delivered.is_ok(), "the FLASH request waited for the backoff: {delivered:?}");
    assert!(SystemTime::now() < retry_at, "delivered only when the backoff ran out anyway");
    // The attempt sends the whole queue in order, the routine request with it.
    wait_state(&mut vn, &routine, MessageState::Delivered).await;
    let mut fr = net.desk("FR");
    assert_eq!(ids(&inbox(&mut fr).await).len(), 2);
    net.stop("VN").await;
    net.stop("FR").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_delivery_is_stored_once_and_receipted_twice() {
    let mut net = Network::new(&["VN", "FR"]).await;
    net.start("VN").await;
    let mut vn = net.desk("VN");
    // Let VN make and store a real envelope while FR is down, then hand it over ourselves.
    let id = submit(&mut vn, preservation_request("FR")).await;
    let envelope =
        vn.get(GetRequest { id: id.clone() }).await.unwrap().into_inner().message.unwrap().envelope.unwrap();
    net.stop("VN").await;
    net.start("FR").await;

    let mut as_vn = net.peer_client("VN", "FR");
    let mut receipts = Vec::new();
    for _ in 0..2 {
        let response = as_vn
            .deliver(DeliverRequest { envelopes: vec![envelope.clone()], ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(response.results.len(), 1);
        match response.results[0].outcome.clone() {
            Some(Outcome::Receipt(receipt)) => receipts.push(receipt),
            other => panic!("expected a receipt, got {other:?}"),
        }
    }
    assert!(!receipts[0].duplicate);
    assert!(receipts[1].duplicate);
    assert_eq!(receipts[0].received_at, receipts[1].received_at, "the original receipt again");
    assert_eq!(receipts[1].receiver, "FR");
    let mut fr = net.desk("FR");
    assert_eq!(ids(&inbox(&mut fr).await), vec![id]);
    net.stop("FR").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_survives_sigkill_right_after_submit() {
    let mut net = Network::new(&["VN", "FR"]).await;
    let vn_process = net.spawn("VN").await;
    let mut vn = net.desk("VN");
    let id = submit(&mut vn, preservation_request("FR")).await;
    vn_process.kill9();

    let vn_process = net.spawn("VN").await;
    let mut vn = net.desk("VN");
    let stored = vn.get(GetRequest { id: id.clone() }).await.unwrap().into_inner().message.unwrap();
    assert!(
        matches!(stored.state(), MessageState::Queued | MessageState::WaitingRetry),
        "{:?}",
        stored.state()
    );

    net.start("FR").await;
    wait_state(&mut vn, &id, MessageState::Delivered).await;
    let mut fr = net.desk("FR");
    assert_eq!(ids(&inbox(&mut fr).await), vec![id]);
    let status = vn_process.terminate().await;
    assert!(status.success(), "graceful shutdown on SIGTERM exits 0, got {status}");
    net.stop("FR").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flash_overtakes_an_earlier_routine_request() {
    let mut net = Network::new(&["VN", "FR"]).await;
    net.start("VN").await;
    let mut vn = net.desk("VN");
    let routine = submit(&mut vn, advice_request("FR", Precedence::Routine, "routine")).await;
    wait_state(&mut vn, &routine, MessageState::WaitingRetry).await;
    let flash = submit(&mut vn, advice_request("FR", Precedence::Flash, "flash")).await;

    net.start("FR").await;
    wait_state(&mut vn, &routine, MessageState::Delivered).await;
    wait_state(&mut vn, &flash, MessageState::Delivered).await;
    let mut fr = net.desk("FR");
    // The inbox lists newest first: FLASH was stored first, so it comes last.
    assert_eq!(ids(&inbox(&mut fr).await), vec![routine, flash]);
    net.stop("VN").await;
    net.stop("FR").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_peer_does_not_delay_the_others() {
    let mut net = Network::new(&["VN", "FR", "DE"]).await;
    net.start("VN").await;
    net.start("DE").await;
    let mut vn = net.desk("VN");
    let to_fr = submit(&mut vn, advice_request("FR", Precedence::Flash, "to the down peer")).await;
    wait_state(&mut vn, &to_fr, MessageState::WaitingRetry).await;
    let to_de = submit(&mut vn, advice_request("DE", Precedence::Routine, "to the live peer")).await;
    wait_state(&mut vn, &to_de, MessageState::Delivered).await;
    let still = vn.get(GetRequest { id: to_fr }).await.unwrap().into_inner().message.unwrap();
    assert_eq!(still.state(), MessageState::WaitingRetry);
    net.stop("VN").await;
    net.stop("DE").await;
}
