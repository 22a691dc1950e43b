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
