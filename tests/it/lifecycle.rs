//! Acceptance 2: a request from VN lands in FR's inbox; FR's acknowledgement and response come
//! back; VN's message ends ANSWERED with a timeline that shows every step.

use hanoi247::proto::{
    AcknowledgeRequest, CancelRequest, EnvelopeKind, GetRequest, MessageState, Precedence, RespondRequest,
};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_is_received_acknowledged_and_answered() {
    let mut net = Network::new(&["VN", "FR", "DE"]).await;
    for node in ["VN", "FR", "DE"] {
        net.start(node).await;
    }
    let (mut vn, mut fr) = (net.desk("VN"), net.desk("FR"));
    let id = submit(&mut vn, preservation_request("FR")).await;

    let received = wait_state(&mut fr, &id, MessageState::Received).await;
    assert_eq!(received.envelope.as_ref().unwrap().origin, "VN");
    assert_eq!(ids(&inbox(&mut fr).await), vec![id.clone()]);
    wait_state(&mut vn, &id, MessageState::Delivered).await;

    let acked = fr
        .acknowledge(AcknowledgeRequest { id: id.clone(), note: "on it".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(acked.message.unwrap().state(), MessageState::Acknowledged);
    let again = fr.acknowledge(AcknowledgeRequest { id: id.clone(), note: String::new() }).await.unwrap_err();
    assert_eq!(again.code(), tonic::Code::FailedPrecondition, "{again:?}");
    wait_state(&mut vn, &id, MessageState::Acknowledged).await;

    fr.respond(RespondRequest { id: id.clone(), text: "preserved for 90 days".into(), ..Default::default() })
        .await
        .unwrap();
    let answered = wait_state(&mut vn, &id, MessageState::Answered).await;
    assert_eq!(
        states(&answered),
        vec![
            MessageState::Queued,
            MessageState::Delivered,
            MessageState::Acknowledged,
            MessageState::Answered
        ]
    );
    assert!(answered.timeline.windows(2).all(|w| w[0].at.unwrap().seconds <= w[1].at.unwrap().seconds));
    assert!(answered.timeline[3].note.contains("preserved for 90 days"), "{:?}", answered.timeline);

    let got = vn.get(GetRequest { id: id.clone() }).await.unwrap().into_inner();
    let kinds: Vec<EnvelopeKind> = got.replies.iter().map(|r| r.envelope.as_ref().unwrap().kind()).collect();
    assert_eq!(kinds, vec![EnvelopeKind::Acknowledgement, EnvelopeKind::Response]);
    let fr_side = fr.get(GetRequest { id: id.clone() }).await.unwrap().into_inner().message.unwrap();
    assert_eq!(
        states(&fr_side),
        vec![MessageState::Received, MessageState::Acknowledged, MessageState::Answered]
    );

    // The replies themselves were delivered to VN (FR's outbox shows them DELIVERED).
    for reply in outbox(&mut fr).await {
        wait_state(&mut fr, &reply.envelope.unwrap().id, MessageState::Delivered).await;
    }
    for node in ["VN", "FR", "DE"] {
        net.stop(node).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn respond_acknowledges_first_and_cancel_follows_a_delivered_request() {
    let mut net = Network::new(&["VN", "FR"]).await;
    net.start("VN").await;
    net.start("FR").await;
    let (mut vn, mut fr) = (net.desk("VN"), net.desk("FR"));

    let answered = submit(&mut vn, advice_request("FR", Precedence::Priority, "question")).await;
    wait_state(&mut fr, &answered, MessageState::Received).await;
    let response = fr
        .respond(RespondRequest { id: answered.clone(), text: "answer".into(), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(response.into_inner().message.unwrap().state(), MessageState::Answered);
    let done = wait_state(&mut vn, &answered, MessageState::Answered).await;
    assert!(states(&done).contains(&MessageState::Acknowledged), "{:?}", states(&done));

    let withdrawn = submit(&mut vn, advice_request("FR", Precedence::Routine, "never mind")).await;
    wait_state(&mut vn, &withdrawn, MessageState::Delivered).await;
    let mut vn_operator = net.desk_as("VN", "operator");
    let cancelled = vn_operator
        .cancel(CancelRequest { id: withdrawn.clone(), reason: "suspect arrested".into() })
        .await
        .unwrap();
    assert_eq!(cancelled.into_inner().message.unwrap().state(), MessageState::Cancelled);
    let at_fr = wait_state(&mut fr, &withdrawn, MessageState::Cancelled).await;
    assert!(at_fr.timeline.last().unwrap().note.contains("suspect arrested"));
    let refused = fr
        .respond(RespondRequest { id: withdrawn, text: "too late".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    net.stop("VN").await;
    net.stop("FR").await;
}

/// docs/design.md: a receiving desk may dispute the precedence of a request, with a reason; the
/// sender sees it. Bad disputes name their field and store nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiving_desk_disputes_the_precedence_and_the_sender_sees_it() {
    use hanoi247::proto::DisputePrecedenceRequest;
    use tonic::Code;

    let mut net = Network::new(&["VN", "FR"]).await;
    net.start("VN").await;
    net.start("FR").await;
    let (mut vn, mut fr) = (net.desk("VN"), net.desk("FR"));
    let id = submit(&mut vn, advice_request("FR", Precedence::Flash, "a question that can wait")).await;
    wait_state(&mut fr, &id, MessageState::Received).await;
    wait_state(&mut vn, &id, MessageState::Delivered).await;
    let dispute = |id: &str, precedence: Precedence, reason: &str| DisputePrecedenceRequest {
        id: id.into(),
        precedence: precedence as i32,
        reason: reason.into(),
    };

    // Refusals: each names its field or the rule, and FR's outbox stays as it was.
    let before = ids(&outbox(&mut fr).await);
    for (request, code, names) in [
        (dispute(&id, Precedence::Routine, " "), Code::InvalidArgument, "reason"),
        (dispute(&id, Precedence::Unspecified, "no deletion risk"), Code::InvalidArgument, "precedence"),
        (dispute(&id, Precedence::Flash, "no deletion risk"), Code::InvalidArgument, "precedence"),
        (dispute("nope", Precedence::Routine, "no deletion risk"), Code::InvalidArgument, "id"),
    ] {
        let status = fr.dispute_precedence(request).await.unwrap_err();
        assert_eq!(status.code(), code, "{status:?}");
        assert!(status.message().starts_with(names), "{status:?}");
    }
    let operator =
        net.desk_as("FR", "operator").dispute_precedence(dispute(&id, Precedence::Routine, "x")).await;
    assert_eq!(operator.unwrap_err().code(), Code::PermissionDenied, "operators do not dispute");
    let own = vn.dispute_precedence(dispute(&id, Precedence::Routine, "x")).await.unwrap_err();
    assert_eq!(own.code(), Code::FailedPrecondition, "only a received request: {own:?}");
    assert_eq!(ids(&outbox(&mut fr).await), before, "nothing stored");

    // FR disputes; VN sees the proposal and the reason with its request, whose state and
    // precedence stay as they were.
    let queued = fr
        .dispute_precedence(dispute(&id, Precedence::Routine, "no deletion risk: ROUTINE is enough"))
        .await
        .unwrap()
        .into_inner()
        .dispute
        .unwrap();
    let sent = queued.envelope.unwrap();
    assert_eq!(
        (sent.kind(), sent.precedence(), sent.in_reply_to.as_str()),
        (EnvelopeKind::PrecedenceDispute, Precedence::Routine, id.as_str())
    );
    let is_dispute = |m: &&hanoi247::proto::Message| {
        m.envelope.as_ref().is_some_and(|e| e.kind() == EnvelopeKind::PrecedenceDispute)
    };
    let mut at_vn = vn.clone();
    eventually("VN sees the dispute", async || {
        let got = at_vn.get(GetRequest { id: id.clone() }).await.unwrap().into_inner();
        got.replies.iter().any(|r| is_dispute(&r))
    })
    .await;
    let got = vn.get(GetRequest { id: id.clone() }).await.unwrap().into_inner();
    let request = got.message.unwrap();
    assert_eq!(request.envelope.as_ref().unwrap().precedence(), Precedence::Flash);
    assert_eq!(request.state(), MessageState::Delivered);
    let seen = got.replies.iter().find(is_dispute).unwrap().clone();
    let envelope = seen.envelope.unwrap();
    assert_eq!(envelope.precedence(), Precedence::Routine);
    assert_eq!(envelope.body, "no deletion risk: ROUTINE is enough");
    let note = &seen.timeline[0].note;
    assert!(note.contains("disputes the precedence") && note.contains("proposes ROUTINE"), "{note}");
    net.stop("VN").await;
    net.stop("FR").await;
}
