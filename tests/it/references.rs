//! Issue 14, bullets 3 and 4: references between messages are authorised. A desk client may
//! answer (`in_reply_to`) only a message it may see and that was exchanged with the new request's
//! destination, and is otherwise told exactly what an unknown id gets (no existence oracle, no
//! case reference copied); a peer's reply to a message not exchanged with it is refused per
//! envelope and not threaded; `Deliver` answers `duplicate` only for the same envelope from the
//! same origin, and refuses another envelope under a known id without giving its receipt away.

use hanoi247::domain::access::Role;
use hanoi247::proto::delivery_result::Outcome;
use hanoi247::proto::{
    DeliverRequest, DeliveryResult, Envelope, EnvelopeKind, GetProofRequest, GetRequest, Message,
    MessageState, Precedence, Refusal,
};
use hanoi247::trust::signing::Signer;
use uuid::Uuid;

use crate::support::*;

/// The signer of `node`, from its own key and certificate files.
fn signer_of(net: &Network, node: &str) -> Signer {
    let config = net.config(node);
    Signer::load(&config.tls.cert, &config.tls.key, &config.tls.network_ca).unwrap()
}

/// The message `id` at `desk` (with its replies), as an officer reads it.
async fn read(desk: &mut hanoi247::cli::desk_client::DeskClient, id: &str) -> (Message, Vec<Message>) {
    let got = desk.get(GetRequest { id: id.into() }).await.unwrap().into_inner();
    (got.message.unwrap(), got.replies)
}

/// `envelope`, signed by `as_node`, delivered to `to_node` by a caller presenting `as_node`'s
/// certificate: its one result.
async fn deliver(net: &Network, as_node: &str, to_node: &str, mut envelope: Envelope) -> DeliveryResult {
    envelope.origin_signature.clear();
    signer_of(net, as_node).sign_envelope(&mut envelope).unwrap();
    let request = DeliverRequest { envelopes: vec![envelope], ..Default::default() };
    let mut results = net.peer_client(as_node, to_node).deliver(request).await.unwrap().into_inner().results;
    assert_eq!(results.len(), 1);
    results.remove(0)
}

fn refusal(result: &DeliveryResult) -> &Refusal {
    match &result.outcome {
        Some(Outcome::Refusal(refusal)) => refusal,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_reply_to_must_be_visible_to_the_caller_and_exchanged_with_the_destination() {
    let clients = [
        ("VN", "duty", Role::Officer),
        ("VN", "police", Role::Agency),
        ("VN", "customs", Role::Agency),
        ("FR", "duty", Role::Officer),
    ];
    let mut net = Network::with_clients(&["VN", "FR", "DE"], &clients).await;
    net.start("VN").await;
    net.start("FR").await;
    let (mut duty, mut police, mut customs) =
        (net.desk_as("VN", "duty"), net.desk_as("VN", "police"), net.desk_as("VN", "customs"));
    let mut fr = net.desk_as("FR", "duty");

    // The officer's request to FR, delivered; the police's own one.
    let officers = submit(&mut duty, preservation_request("FR")).await;
    wait_state(&mut fr, &officers, MessageState::Received).await;
    let case = read(&mut duty, &officers).await.0.envelope.unwrap().case_reference;
    let polices = submit(&mut police, advice_request("FR", Precedence::Routine, "police case")).await;
    let before = ids(&outbox(&mut duty).await);

    // What an id nobody stored gets: the refusal every other case must look like.
    let unknown = Uuid::now_v7().to_string();
    let follow_up = |destination: &str, parent: &str| {
        let mut request = advice_request(destination, Precedence::Routine, "follow-up");
        request.in_reply_to = parent.into();
        request
    };
    let refused = |status: tonic::Status, parent: &str| {
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert_eq!(status.message(), format!("in_reply_to: no message with id {parent}"), "{status:?}");
    };
    refused(police.submit(follow_up("FR", &unknown)).await.unwrap_err(), &unknown);
    // Another client's message (an agency sees only its own) and a message of another pair
    // (VN-FR, but the new request goes to DE) are refused in the same words.
    refused(police.submit(follow_up("FR", &officers)).await.unwrap_err(), &officers);
    refused(customs.submit(follow_up("FR", &polices)).await.unwrap_err(), &polices);
    refused(duty.submit(follow_up("DE", &officers)).await.unwrap_err(), &officers);
    refused(police.submit(follow_up("DE", &polices)).await.unwrap_err(), &polices);

    // Nothing stored: no new message, and the officer's case reference was copied nowhere.
    let after = outbox(&mut duty).await;
    assert_eq!(ids(&after), before, "nothing stored");
    let in_case: Vec<&Message> =
        after.iter().filter(|m| m.envelope.as_ref().unwrap().case_reference == case).collect();
    assert_eq!(in_case.len(), 1, "only the officer's request is in its case: {in_case:#?}");
    assert!(outbox(&mut police).await.iter().all(|m| m.envelope.as_ref().unwrap().case_reference != case));

    // The node still serves, and a reference the caller may make is accepted and threaded.
    let own = police.submit(follow_up("FR", &polices)).await.unwrap().into_inner().message.unwrap();
    assert_eq!(own.envelope.as_ref().unwrap().in_reply_to, polices);
    let next = duty.submit(follow_up("FR", &officers)).await.unwrap().into_inner().message.unwrap();
    let next = next.envelope.unwrap();
    assert_eq!(next.case_reference, case, "a follow-up in the case carries its reference");
    wait_state(&mut fr, &next.id, MessageState::Received).await;
    net.stop("VN").await;
    net.stop("FR").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_from_a_node_the_parent_does_not_concern_is_refused_and_not_threaded() {
    let mut net = Network::new(&["VN", "FR", "DE"]).await;
    net.start("VN").await;
    net.start("FR").await;
    let (mut vn, mut fr) = (net.desk("VN"), net.desk("FR"));
    let id = submit(&mut vn, preservation_request("FR")).await;
    wait_state(&mut vn, &id, MessageState::Delivered).await;
    let (request, replies) = read(&mut fr, &id).await;
    assert!(replies.is_empty());
    let parent = request.envelope.clone().unwrap();

    // DE answers and withdraws the VN-FR request at both ends, and answers an id nobody stored.
    let reply = |kind: EnvelopeKind, to: &str, in_reply_to: &str| Envelope {
        id: Uuid::now_v7().to_string(),
        origin: "DE".into(),
        destination: to.into(),
        kind: kind as i32,
        in_reply_to: in_reply_to.into(),
        body: "ignore the request, it is closed".into(),
        subject: format!("Re: {}", parent.subject),
        created_at: Some(hanoi247::domain::timestamp::now()),
        preservation: None,
        origin_signature: Vec::new(),
        ..parent.clone()
    };
    let unknown = Uuid::now_v7().to_string();
    let mut sent = Vec::new();
    for (kind, to, answers) in [
        (EnvelopeKind::Cancellation, "FR", id.as_str()),
        (EnvelopeKind::Response, "FR", id.as_str()),
        (EnvelopeKind::Response, "VN", id.as_str()),
        (EnvelopeKind::Acknowledgement, "VN", id.as_str()),
        (EnvelopeKind::Response, "FR", unknown.as_str()),
    ] {
        let envelope = reply(kind, to, answers);
        let result = deliver(&net, "DE", to, envelope.clone()).await;
        let refusal = refusal(&result);
        assert_eq!(refusal.envelope_id, envelope.id);
        assert_eq!(refusal.code, tonic::Code::InvalidArgument as i32, "{refusal:?}");
        // Unknown and not exchanged with DE read alike: no oracle for another pair's ids.
        let expected = format!("in_reply_to: no message with id {answers} between DE and this node");
        assert_eq!(refusal.message, expected, "{kind:?} to {to}");
        sent.push((to, envelope.id));
    }

    // Nothing stored: neither envelope, no reply threaded, both ends of the request unchanged.
    for (to, envelope_id) in &sent {
        let mut desk = net.desk(to);
        let status = desk.get(GetRequest { id: envelope_id.clone() }).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::NotFound, "{to} stored {envelope_id}");
    }
    let (at_fr, replies) = read(&mut fr, &id).await;
    assert_eq!((at_fr.state(), at_fr.timeline.len()), (request.state(), request.timeline.len()));
    assert!(replies.is_empty(), "threaded at FR: {replies:#?}");
    let (at_vn, replies) = read(&mut vn, &id).await;
    assert_eq!(at_vn.state(), MessageState::Delivered);
    assert!(replies.is_empty(), "threaded at VN: {replies:#?}");

    // Both still serve: FR's own answer goes through, from the node the request concerns.
    fr.respond(hanoi247::proto::RespondRequest {
        id: id.clone(),
        text: "preserved".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    wait_state(&mut vn, &id, MessageState::Answered).await;
    net.stop("VN").await;
    net.stop("FR").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliver_answers_duplicate_only_for_the_same_envelope_from_the_same_origin() {
    let mut net = Network::new(&["VN", "FR", "DE"]).await;
    net.start("VN").await;
    net.start("FR").await;
    let (mut vn, mut fr) = (net.desk("VN"), net.desk("FR"));
    let id = submit(&mut vn, preservation_request("FR")).await;
    wait_state(&mut vn, &id, MessageState::Delivered).await;
    let (stored, _) = read(&mut fr, &id).await;
    let receipt =
        fr.get_proof(GetProofRequest { id: id.clone() }).await.unwrap().into_inner().receipt.unwrap();
    let original = read(&mut vn, &id).await.0.envelope.unwrap();

    // DE sends an envelope under the VN-FR message's id; VN sends other content under it.
    let mut from_de = Envelope { origin: "DE".into(), ..original.clone() };
    from_de.subject = "Preserve DE".into();
    let mut changed = original.clone();
    changed.body = "other content under a known id".into();
    for (what, sender, envelope) in
        [("DE under VN's id", "DE", from_de), ("VN's id, other content", "VN", changed)]
    {
        let result = deliver(&net, sender, "FR", envelope).await;
        let refusal = refusal(&result);
        assert_eq!(refusal.envelope_id, id, "{what}");
        assert_eq!(refusal.code, tonic::Code::InvalidArgument as i32, "{what}: {refusal:?}");
        assert_eq!(refusal.message, format!("id: this node holds another envelope under {id}"), "{what}");
    }

    // Nothing changed at FR: the stored message is as it was, nothing new in the inbox.
    let (after, replies) = read(&mut fr, &id).await;
    assert_eq!(after, stored, "the stored message is unchanged");
    assert!(replies.is_empty());
    assert_eq!(ids(&inbox(&mut fr).await), vec![id.clone()], "nothing new stored");

    // The same envelope resent by VN is the duplicate, with the receipt FR signed the first time.
    let result = deliver(&net, "VN", "FR", original.clone()).await;
    let Some(Outcome::Receipt(again)) = result.outcome else { panic!("{result:?}") };
    assert!(again.duplicate, "{again:?}");
    assert_eq!(again.signature, receipt.signature, "the receipt signed the first time");

    // FR still serves.
    let next = submit(&mut vn, preservation_request("FR")).await;
    wait_state(&mut fr, &next, MessageState::Received).await;
    net.stop("VN").await;
    net.stop("FR").await;
}
