//! Acceptance 8: bad desk input gets INVALID_ARGUMENT naming the field; nothing is stored.
//! Input over a configured limit (`[limits]`) gets RESOURCE_EXHAUSTED naming the field and the
//! limit; input that is not protobuf, or strings that are not UTF-8, get INVALID_ARGUMENT.

use hanoi247::config::ClientConfig;
use hanoi247::proto::delivery_result::Outcome;
use hanoi247::proto::{
    AcknowledgeRequest, Attachment, CancelRequest, DeliverRequest, Envelope, EnvelopeKind, GetRequest,
    HandlingCode, Message, MessageState, Precedence, RequestType, RespondRequest, SubmitRequest,
};

use crate::support::*;

async fn refused_field(
    desk: &mut hanoi247::cli::desk_client::DeskClient,
    request: SubmitRequest,
    field: &str,
) {
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

/// A small `[limits]` section for a node's config, put before `[deadlines]` (which `init` writes).
fn small_limits(net: &Network, node: &str, limits: &str) {
    net.edit_config(node, "[deadlines]\n", &format!("[limits]\n{limits}\n[deadlines]\n"));
}

/// Everything a node's desk shows: its inbox and outbox.
async fn stored(desk: &mut hanoi247::cli::desk_client::DeskClient) -> (Vec<Message>, Vec<Message>) {
    (inbox(desk).await, outbox(desk).await)
}

/// A refusal of a size limit: RESOURCE_EXHAUSTED, the message starting with the field and naming
/// the configuration key of the limit.
fn assert_over_limit(status: &tonic::Status, field: &str, key: &str) {
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.message().starts_with(&format!("{field}:")), "should name {field}: {}", status.message());
    assert!(
        status.message().contains(&format!("(limits.{key})")),
        "should name limits.{key}: {}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_limits_refuse_naming_field_and_limit_and_store_nothing() {
    let mut net = Network::new(&["VN", "FR"]).await;
    let limits = "max_envelope_bytes = 2048\nmax_attachments = 1\nmax_subject_chars = 10\n\
                  max_case_reference_chars = 16\nmax_body_chars = 20\nmax_text_chars = 25\nmax_name_chars = 16\n";
    small_limits(&net, "VN", limits);
    small_limits(&net, "FR", limits);
    net.start("VN").await;
    net.start("FR").await;
    let (mut vn, mut fr) = (net.desk("VN"), net.desk("FR"));

    // One request within every limit (subject of 10 characters, 12 bytes) goes through.
    let mut ok = preservation_request("FR");
    ok.subject = "Bảo vệ dữ".into();
    ok.body = "thư điện tử".into();
    ok.preservation.as_mut().unwrap().facts = "lừa đảo".into();
    let id = submit(&mut vn, ok).await;
    wait_state(&mut fr, &id, MessageState::Received).await;
    wait_state(&mut vn, &id, MessageState::Delivered).await;
    let (vn_before, fr_before) = (stored(&mut vn).await, stored(&mut fr).await);

    let mut long_subject = advice_request("FR", Precedence::Flash, "Bảo vệ dữ l");
    assert_over_limit(&refused(&mut vn, long_subject.clone()).await, "subject", "max_subject_chars");
    long_subject.subject = "s".into();
    long_subject.case_reference = "VN-2026-123456789".into();
    assert_over_limit(&refused(&mut vn, long_subject).await, "case_reference", "max_case_reference_chars");
    let mut long_body = advice_request("FR", Precedence::Flash, "s");
    long_body.body = "x".repeat(21);
    assert_over_limit(&refused(&mut vn, long_body.clone()).await, "body", "max_body_chars");
    long_body.body = "x".repeat(3000);
    assert_over_limit(&refused(&mut vn, long_body.clone()).await, "envelope", "max_envelope_bytes");
    // Far over the envelope limit: the desk listener's decode limit refuses it unread.
    long_body.body = "x".repeat(2048 + 64 * 1024 + 1);
    let status = refused(&mut vn, long_body).await;
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("limits.max_envelope_bytes"), "{}", status.message());
    let mut long_facts = preservation_request("FR");
    long_facts.subject = "s".into();
    long_facts.preservation.as_mut().unwrap().facts = "x".repeat(26);
    assert_over_limit(&refused(&mut vn, long_facts).await, "preservation.facts", "max_text_chars");
    let mut long_restrictions = advice_request("FR", Precedence::Flash, "s");
    long_restrictions.handling_code = HandlingCode::H3 as i32;
    long_restrictions.handling_restrictions = "x".repeat(26);
    assert_over_limit(&refused(&mut vn, long_restrictions).await, "handling_restrictions", "max_text_chars");
    let attachment = Attachment {
        name: "a.csv".into(),
        media_type: "text/csv".into(),
        size_bytes: 1,
        sha256: vec![0; 32],
    };
    let mut two = advice_request("FR", Precedence::Flash, "s");
    two.attachments = vec![attachment.clone(), attachment.clone()];
    assert_over_limit(&refused(&mut vn, two).await, "attachments", "max_attachments");
    let mut long_name = advice_request("FR", Precedence::Flash, "s");
    long_name.attachments = vec![Attachment { name: "x".repeat(17), ..attachment }];
    assert_over_limit(&refused(&mut vn, long_name).await, "attachments[0].name", "max_name_chars");

    // Texts that travel as the body of a reply are held to the body's limit.
    let note = vn_over_body_limit();
    let status = fr.acknowledge(AcknowledgeRequest { id: id.clone(), note: note.clone() }).await.unwrap_err();
    assert_over_limit(&status, "note", "max_body_chars");
    let status = fr
        .respond(RespondRequest { id: id.clone(), text: note.clone(), ..Default::default() })
        .await
        .unwrap_err();
    assert_over_limit(&status, "text", "max_body_chars");
    let mut vn_operator = net.desk_as("VN", "operator");
    let status = vn_operator.cancel(CancelRequest { id: id.clone(), reason: note }).await.unwrap_err();
    assert_over_limit(&status, "reason", "max_body_chars");

    assert_eq!(stored(&mut vn).await, vn_before, "nothing stored changed at VN");
    assert_eq!(stored(&mut fr).await, fr_before, "nothing stored changed at FR");
    net.stop("VN").await;
    net.stop("FR").await;
}

async fn refused(desk: &mut hanoi247::cli::desk_client::DeskClient, request: SubmitRequest) -> tonic::Status {
    desk.submit(request).await.unwrap_err()
}

/// 21 characters: one over the `max_body_chars` of the test above.
fn vn_over_body_limit() -> String {
    "ghi chú quá dài ở đây".chars().chain(std::iter::repeat('x')).take(21).collect()
}

/// A valid request envelope from `origin` to `destination`, as a peer would send it.
fn envelope(origin: &str, destination: &str, subject: &str) -> Envelope {
    Envelope {
        id: uuid::Uuid::now_v7().to_string(),
        origin: origin.into(),
        destination: destination.into(),
        kind: EnvelopeKind::Request as i32,
        request_type: RequestType::TechnicalAdvice as i32,
        precedence: Precedence::Routine as i32,
        case_reference: format!("{origin}-2026-00000001"),
        subject: subject.into(),
        language: "en".into(),
        created_at: Some(hanoi247::domain::timestamp::now()),
        expires_at: Some(hanoi247::domain::timestamp::after(std::time::Duration::from_secs(3600))),
        handling_code: HandlingCode::H0 as i32,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deliver_batch_over_the_limit_is_refused_whole() {
    let mut net = Network::new(&["VN", "FR"]).await;
    small_limits(&net, "FR", "max_batch_envelopes = 2\n");
    // A node may not send larger batches than it accepts itself.
    net.edit_config("FR", "batch_size = 64", "batch_size = 2");
    net.start("FR").await;
    let mut fr = net.desk("FR");
    let mut as_vn = net.peer_client("VN", "FR");

    // Signed with VN's key, as VN would (the receiver refuses unsigned envelopes).
    let vn = net.config("VN");
    let signer =
        hanoi247::trust::signing::Signer::load(&vn.tls.cert, &vn.tls.key, &vn.tls.network_ca).unwrap();
    let three = (0..3)
        .map(|i| {
            let mut envelope = envelope("VN", "FR", &format!("request {i}"));
            signer.sign_envelope(&mut envelope).unwrap();
            envelope
        })
        .collect::<Vec<_>>();
    let status =
        as_vn.deliver(DeliverRequest { envelopes: three.clone(), ..Default::default() }).await.unwrap_err();
    assert_over_limit(&status, "envelopes", "max_batch_envelopes");
    assert!(inbox(&mut fr).await.is_empty(), "nothing stored");
    // Over the peer listener's decode limit (one 8 MiB batch): refused unread.
    let mut huge = envelope("VN", "FR", "far too big");
    huge.body = "x".repeat(9 * 1024 * 1024);
    let status =
        as_vn.deliver(DeliverRequest { envelopes: vec![huge], ..Default::default() }).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("8 MiB per Deliver batch"), "{}", status.message());
    assert!(inbox(&mut fr).await.is_empty(), "nothing stored");

    // Huge values quoted in a refusal do not make a huge status message (HTTP/2 would refuse it).
    let mut long_origin = envelope("VN", "FR", "who?");
    long_origin.origin = "V".repeat(100_000);
    let status = as_vn
        .deliver(DeliverRequest { envelopes: vec![long_origin], ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(status.message().len() < 1100, "{} bytes", status.message().len());
    let status = fr.get(GetRequest { id: "x".repeat(100_000) }).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().starts_with("id:") && status.message().len() < 1100, "{}", status.message());

    // At the limit it is accepted.
    let results = as_vn
        .deliver(DeliverRequest { envelopes: three[..2].to_vec(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert!(results.iter().all(|r| matches!(r.outcome, Some(Outcome::Receipt(_)))), "{results:?}");
    assert_eq!(inbox(&mut fr).await.len(), 2);
    net.stop("FR").await;
}

/// A codec that sends and receives raw bytes, to put what no generated client would on the wire.
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        prost::bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        use prost::bytes::Buf;
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

/// Calls `path` on `channel` with `bytes` as the request message; the node's answer.
async fn raw_call(
    channel: tonic::transport::Channel,
    path: &'static str,
    bytes: Vec<u8>,
) -> Result<Vec<u8>, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static(path);
    grpc.unary(tonic::Request::new(bytes), path, RawCodec).await.map(tonic::Response::into_inner)
}

/// `message` encoded, with the bytes of `marker` (in a string field) replaced by bytes that are
/// not UTF-8.
fn with_invalid_utf8(message: &impl prost::Message, marker: &str) -> Vec<u8> {
    let mut bytes = message.encode_to_vec();
    let at = bytes.windows(marker.len()).position(|w| w == marker.as_bytes()).expect("marker encoded");
    bytes[at..at + 2].copy_from_slice(&[0xC3, 0x28]);
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_protobuf_and_non_utf8_strings_are_invalid_argument_and_store_nothing() {
    const MARKER: &str = "MARKER";
    let mut net = Network::new(&["VN", "FR"]).await;
    net.start("FR").await;
    let mut fr = net.desk("FR");
    let desk_channel =
        hanoi247::cli::desk_client::channel(&ClientConfig::load(&net.client_config_path("FR")).unwrap())
            .unwrap();
    let submit_path = "/hanoi247.v1.DeskService/Submit";
    let deliver_path = "/hanoi247.v1.PeerService/Deliver";

    let request = advice_request("VN", Precedence::Flash, MARKER);
    let status =
        raw_call(desk_channel.clone(), submit_path, with_invalid_utf8(&request, MARKER)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("subject") && status.message().contains("UTF-8"),
        "{}",
        status.message()
    );
    let status = raw_call(desk_channel, submit_path, vec![0xFF; 16]).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("malformed protobuf"), "{}", status.message());

    let batch = DeliverRequest { envelopes: vec![envelope("VN", "FR", MARKER)], ..Default::default() };
    let status = raw_call(net.peer_channel("VN", "FR"), deliver_path, with_invalid_utf8(&batch, MARKER))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("subject") && status.message().contains("UTF-8"),
        "{}",
        status.message()
    );
    let status =
        raw_call(net.peer_channel("VN", "FR"), deliver_path, vec![0x0A, 0xFF, 0xFF]).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");

    assert_eq!(stored(&mut fr).await, (Vec::new(), Vec::new()), "nothing stored");
    net.stop("FR").await;
}

/// The signed directory lists the request types a member accepts: a request of another type is
/// refused at `Submit`, naming `request_type` and the member's phone fallback; nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_type_the_destination_does_not_accept_is_refused_at_submit() {
    let mut net = Network::new(&["VN", "FR"]).await;
    net.edit_shared_directory(|directory| {
        let fr = directory.members.iter_mut().find(|m| m.code == code("FR")).unwrap();
        fr.request_types = vec!["TECHNICAL_ADVICE".into(), "LEGAL_INFORMATION".into()];
        fr.phone = "+33 1 00 00 00 00".into();
    });
    net.start("VN").await;
    let mut vn = net.desk("VN");
    let before = ids(&outbox(&mut vn).await);
    let status = vn.submit(preservation_request("FR")).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().starts_with("request_type"), "{}", status.message());
    assert!(status.message().contains("does not accept PRESERVATION"), "{}", status.message());
    assert!(status.message().contains("+33 1 00 00 00 00"), "{}", status.message());
    assert_eq!(ids(&outbox(&mut vn).await), before, "nothing stored");
    // The types it lists pass.
    submit(&mut vn, advice_request("FR", Precedence::Routine, "advice")).await;
    let mut legal = advice_request("FR", Precedence::Routine, "law");
    legal.request_type = RequestType::LegalInformation as i32;
    submit(&mut vn, legal).await;
    net.stop("VN").await;
}

/// The receiver checks the same: a sender on an older directory may still send a type the
/// receiver's entry no longer lists. It is refused (not stored) and the sender shows why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_type_the_receiver_does_not_accept_is_refused_on_arrival() {
    let mut net = Network::new(&["VN", "FR"]).await;
    // Only FR's own copy lists its narrower types; VN still has the directory without them.
    net.edit_directory("FR", |directory| {
        let fr = directory.members.iter_mut().find(|m| m.code == code("FR")).unwrap();
        fr.request_types = vec!["TECHNICAL_ADVICE".into()];
    });
    net.start("VN").await;
    net.start("FR").await;
    let mut vn = net.desk("VN");
    let preservation = submit(&mut vn, preservation_request("FR")).await;
    let advice = submit(&mut vn, advice_request("FR", Precedence::Routine, "advice")).await;
    wait_state(&mut vn, &advice, MessageState::Delivered).await;
    let refused = wait_state(&mut vn, &preservation, MessageState::WaitingRetry).await;
    assert!(
        refused.last_error.contains("refused by FR: request_type")
            && refused.last_error.contains("does not accept PRESERVATION"),
        "{}",
        refused.last_error
    );
    let mut fr = net.desk("FR");
    assert_eq!(ids(&inbox(&mut fr).await), vec![advice], "the refused request is not stored");
    net.stop("VN").await;
    net.stop("FR").await;
}
