//! Acceptance 8: bad desk input gets INVALID_ARGUMENT naming the field; nothing is stored.

use hanoi247::proto::{AcknowledgeRequest, GetRequest, Precedence, SubmitRequest};

use crate::support::*;

async fn refused_field(desk: &mut hanoi247::desk_client::DeskClient, request: SubmitRequest, field: &str) {
    let status = desk.submit(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().starts_with(field), "message should name {field}: {}", status.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_submissions_name_the_field_and_store_nothing() {
    let mut net = Network::new(&["VN", "FR"]).await;
    net.start("VN").await;
    let mut vn = net.desk("VN");

    let mut unknown = preservation_request("FR");
    unknown.destination = "JP".into();
    refused_field(&mut vn, unknown, "destination").await;
    let mut malformed = preservation_request("FR");
    malformed.destination = "France".into();
    refused_field(&mut vn, malformed, "destination").await;
    let mut to_self = preservation_request("FR");
    to_self.destination = "VN".into();
    refused_field(&mut vn, to_self, "destination").await;

    let mut no_preservation = preservation_request("FR");
    no_preservation.preservation = None;
    refused_field(&mut vn, no_preservation, "preservation").await;
    let mut missing_facts = preservation_request("FR");
    missing_facts.preservation.as_mut().unwrap().facts.clear();
    refused_field(&mut vn, missing_facts, "preservation.facts").await;
    let mut short = preservation_request("FR");
    short.preservation.as_mut().unwrap().preservation_days = 30;
    refused_field(&mut vn, short, "preservation.preservation_days").await;

    refused_field(&mut vn, advice_request("FR", Precedence::Flash, ""), "subject").await;
    refused_field(&mut vn, advice_request("FR", Precedence::Unspecified, "s"), "precedence").await;
    let mut no_type = advice_request("FR", Precedence::Flash, "s");
    no_type.request_type = 0;
    refused_field(&mut vn, no_type, "request_type").await;
    let mut bad_parent = advice_request("FR", Precedence::Flash, "s");
    bad_parent.in_reply_to = "not-an-id".into();
    refused_field(&mut vn, bad_parent, "in_reply_to").await;

    assert!(outbox(&mut vn).await.is_empty(), "nothing stored");

    let missing = vn.get(GetRequest { id: uuid::Uuid::now_v7().to_string() }).await.unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let bad_id =
        vn.acknowledge(AcknowledgeRequest { id: "42".into(), note: String::new() }).await.unwrap_err();
    assert_eq!(bad_id.code(), tonic::Code::InvalidArgument);
    assert!(bad_id.message().starts_with("id"), "{}", bad_id.message());
    net.stop("VN").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_envelopes_are_refused_naming_the_limit_and_store_nothing() {
    use hanoi247::proto::DeliverRequest;
    use hanoi247::proto::delivery_result::Outcome;

    let mut net = Network::new(&["VN", "FR"]).await;
    net.start("VN").await;
    let mut vn = net.desk("VN");

    // Over the envelope limit: refused by validation, naming the limit.
    let mut big = advice_request("FR", Precedence::Flash, "too big");
    big.body = "x".repeat(1024 * 1024 + 1);
    let status = vn.submit(big).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().starts_with("envelope:") && status.message().contains("at most 1048576"),
        "{}",
        status.message()
    );
    // Far over it: refused by the gRPC decode limit before anything is read.
    let mut huge = advice_request("FR", Precedence::Flash, "far too big");
    huge.body = "x".repeat(3 * 1024 * 1024);
    let status = vn.submit(huge).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(outbox(&mut vn).await.is_empty(), "nothing stored");

    // A peer sending an oversized envelope gets a per-envelope refusal; the receiver stores nothing.
    let id = submit(&mut vn, advice_request("FR", Precedence::Routine, "will be inflated")).await;
    let mut envelope =
        vn.get(GetRequest { id }).await.unwrap().into_inner().message.unwrap().envelope.unwrap();
    net.stop("VN").await;
    net.start("FR").await;
    envelope.body = "y".repeat(1024 * 1024 + 1);
    let mut as_vn = net.peer_client("VN", "FR");
    let results = as_vn
        .deliver(DeliverRequest { envelopes: vec![envelope], ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .results;
    match &results[0].outcome {
        Some(Outcome::Refusal(refusal)) => {
            assert_eq!(refusal.code, tonic::Code::ResourceExhausted as i32);
            assert!(refusal.message.starts_with("envelope:"), "{}", refusal.message);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let mut fr = net.desk("FR");
    assert!(inbox(&mut fr).await.is_empty(), "nothing stored");
    net.stop("FR").await;
}
