//! Issue 5 (roles): the desk API's roles are enforced for every RPC in one place; an agency sees
//! only what it submitted; a client without a role is refused.

use hanoi247::domain::access::Role;
use hanoi247::proto::{
    AcknowledgeRequest, CancelRequest, GetQueueRequest, GetRequest, ListInboxRequest, ListOutboxRequest,
    ListPeersRequest, MessageState, Precedence, WatchRequest,
};
use tokio_stream::StreamExt;

use crate::support::*;

fn denied<T: std::fmt::Debug>(result: Result<T, tonic::Status>, what: &str) {
    let status = result.expect_err(what);
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{what}: {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_may_do_what_the_table_says_and_agencies_see_only_their_own() {
    let clients = [
        ("VN", "duty", Role::Officer),
        ("VN", "ops", Role::Operator),
        ("VN", "police", Role::Agency),
        ("VN", "cert", Role::Agency),
        ("VN", "audit", Role::Auditor),
    ];
    let mut net = Network::with_clients(&["VN", "FR"], &clients).await;
    net.start("VN").await;
    net.start("FR").await;
    let (mut duty, mut ops, mut police, mut cert, mut audit) = (
        net.desk_as("VN", "duty"),
        net.desk_as("VN", "ops"),
        net.desk_as("VN", "police"),
        net.desk_as("VN", "cert"),
        net.desk_as("VN", "audit"),
    );
    let mut fr = net.desk("FR");

    let of_police = submit(&mut police, preservation_request("FR")).await;
    let of_cert = submit(&mut cert, advice_request("FR", Precedence::Routine, "cert's")).await;
    let of_duty = submit(&mut duty, advice_request("FR", Precedence::Flash, "duty's")).await;
    wait_state(&mut fr, &of_police, MessageState::Received).await;
    fr.acknowledge(AcknowledgeRequest { id: of_police.clone(), note: "taken".into() }).await.unwrap();
    wait_state(&mut duty, &of_police, MessageState::Acknowledged).await;

    // The agency: its own request with its reply; nobody else's; no inbox, no desk work.
    let own = police.get(GetRequest { id: of_police.clone() }).await.unwrap().into_inner();
    assert_eq!(own.message.unwrap().state(), MessageState::Acknowledged);
    assert_eq!(own.replies.len(), 1, "the acknowledgement of its own request");
    let ack_id = own.replies[0].envelope.as_ref().unwrap().id.clone();
    denied(police.get(GetRequest { id: of_cert.clone() }).await, "another agency's request");
    denied(police.get(GetRequest { id: of_duty.clone() }).await, "the officer's request");
    let listed = police.list_outbox(ListOutboxRequest { limit: 100, ..Default::default() }).await.unwrap();
    assert_eq!(ids(&listed.into_inner().messages), vec![of_police.clone()]);
    denied(police.list_inbox(ListInboxRequest::default()).await, "agency inbox");
    denied(
        police.acknowledge(AcknowledgeRequest { id: of_police.clone(), note: String::new() }).await,
        "agency ack",
    );
    denied(police.get_queue(GetQueueRequest {}).await, "agency queue");
    let mut events = police.watch(WatchRequest { after_sequence: Some(0) }).await.unwrap().into_inner();
    let mut seen = Vec::new();
    while !seen.iter().any(|e: &hanoi247::proto::WatchResponse| e.state() == MessageState::Acknowledged) {
        let event = tokio::time::timeout(DEADLINE, events.next()).await.unwrap().unwrap().unwrap();
        seen.push(event);
    }
    let mine = |e: &hanoi247::proto::WatchResponse| e.message_id == of_police || e.message_id == ack_id;
    assert!(seen.iter().all(mine), "only its own request and its replies: {seen:?}");

    // The officer: everything but operator work.
    assert_eq!(outbox(&mut duty).await.len(), 3);
    denied(duty.get_queue(GetQueueRequest {}).await, "officer queue");
    denied(duty.cancel(CancelRequest { id: of_duty.clone(), reason: "x".into() }).await, "officer cancel");

    // The operator: reads everything, sees queues and peers, cancels; does not submit.
    assert_eq!(
        ops.list_outbox(ListOutboxRequest { limit: 100, ..Default::default() })
            .await
            .unwrap()
            .into_inner()
            .messages
            .len(),
        3
    );
    ops.get_queue(GetQueueRequest {}).await.unwrap();
    ops.list_peers(ListPeersRequest {}).await.unwrap();
    denied(ops.submit(advice_request("FR", Precedence::Flash, "ops")).await, "operator submit");
    ops.cancel(CancelRequest { id: of_cert.clone(), reason: "withdrawn by the operator".into() })
        .await
        .unwrap();

    // The auditor: no desk calls (the audit log is its door).
    denied(audit.get(GetRequest { id: of_police.clone() }).await, "auditor get");
    denied(audit.list_outbox(ListOutboxRequest::default()).await, "auditor outbox");
    net.stop("VN").await;
    net.stop("FR").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certified_client_without_a_role_is_refused() {
    let mut net = Network::new(&["VN", "FR"]).await;
    // The officer's certificate is valid, but the node config no longer gives it a role.
    net.edit_config("VN", "[[clients]]\nname = \"officer\"\nrole = \"officer\"\n", "");
    net.start("VN").await;
    let mut officer = net.desk("VN");
    let status = officer.submit(preservation_request("FR")).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert!(status.message().contains("has no role"), "{}", status.message());
    let mut ops = net.desk_as("VN", "operator");
    assert!(outbox(&mut ops).await.is_empty(), "nothing stored");
    net.stop("VN").await;
}
