//! Issue 4 (expiry): a message still undelivered at its `expires_at` becomes EXPIRED, keeps its
//! last error, is never sent after that, shows in the outbox; an operator can requeue it.

use std::time::Duration;

use hanoi247::proto::{GetRequest, ListPeersRequest, MessageState, Precedence, RequeueRequest};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undeliverable_message_expires_and_can_be_requeued() {
    let mut net = Network::new(&["VN", "FR"]).await;
    net.start("VN").await;
    let mut vn = net.desk("VN");
    let mut vn_operator = net.desk_as("VN", "operator");
    let mut request = advice_request("FR", Precedence::Immediate, "expires soon");
    request.expires_at = Some(hanoi247::domain::timestamp::after(Duration::from_secs(2)));
    let id = submit(&mut vn, request).await;
    wait_state(&mut vn, &id, MessageState::WaitingRetry).await;

    let expired = wait_state(&mut vn, &id, MessageState::Expired).await;
    assert!(!expired.last_error.is_empty(), "the last error is kept");
    assert!(expired.timeline.last().unwrap().note.contains("last error"), "{:?}", expired.timeline);
    let listed = outbox(&mut vn).await;
    assert_eq!(listed[0].state(), MessageState::Expired);

    // FR comes back: VN talks to it (Hello) but never sends the expired message.
    net.start("FR").await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let peers = vn_operator.list_peers(ListPeersRequest {}).await.unwrap().into_inner().peers;
        if peers.iter().any(|p| p.peer == "FR" && p.last_contact_at.is_some()) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "VN never reached FR");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut fr = net.desk("FR");
    assert!(inbox(&mut fr).await.is_empty(), "an expired message is never sent");
    let still = vn.get(GetRequest { id: id.clone() }).await.unwrap().into_inner().message.unwrap();
    assert_eq!(still.state(), MessageState::Expired);

    // Requeue with a past expiry is refused; with a new one it is delivered.
    let past = RequeueRequest {
        id: id.clone(),
        expires_at: Some(hanoi247::domain::timestamp::from_system(std::time::UNIX_EPOCH)),
    };
    let refused = vn_operator.requeue(past).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(refused.message().starts_with("expires_at"));
    let requeued =
        vn_operator.requeue(RequeueRequest { id: id.clone(), expires_at: None }).await.unwrap().into_inner();
    assert_eq!(requeued.message.unwrap().state(), MessageState::Queued);
    let delivered = wait_state(&mut vn, &id, MessageState::Delivered).await;
    assert_eq!(
        states(&delivered),
        vec![
            MessageState::Queued,
            MessageState::WaitingRetry,
            MessageState::Expired,
            MessageState::Queued,
            MessageState::Delivered
        ]
    );
    assert_eq!(ids(&inbox(&mut fr).await), vec![id.clone()]);
    let again = vn_operator.requeue(RequeueRequest { id, expires_at: None }).await.unwrap_err();
    assert_eq!(again.code(), tonic::Code::FailedPrecondition, "only EXPIRED can be requeued");
    net.stop("VN").await;
    net.stop("FR").await;
}
