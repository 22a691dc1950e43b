//! Issue 17, retention that protects people: an officer closes a case (`CloseCase`, `hanoi247
//! close`); once `[retention] closed_content` has passed (the node's clock moved, not waited
//! for) the node removes the case's content and keeps ids, states, times, digests, receipts,
//! signatures and the audit chain; `show` says what was removed and when; proofs made before and
//! after (format v3) both verify; the peer keeps its copy.

use std::path::Path;
use std::time::{Duration, SystemTime};

use hanoi247::domain::access::Role;
use hanoi247::domain::clock::Clock;
use hanoi247::proto::{
    CloseCaseRequest, GetRequest, HandlingCode, ListAuditRequest, Message, MessageState, RespondRequest,
    WatchRequest,
};
use serde_json::Value;
use tokio_stream::StreamExt;
use tonic::Code;

use crate::signing::{assert_tamper_fails, verify};
use crate::support::*;

const CLIENTS: [(&str, &str, Role); 6] = [
    ("VN", "officer", Role::Officer),
    ("VN", "operator", Role::Operator),
    ("VN", "police", Role::Agency),
    ("VN", "audit", Role::Auditor),
    ("FR", "officer", Role::Officer),
    ("FR", "operator", Role::Operator),
];

/// Runs the real binary with `args`: (success, stdout, stderr).
async fn cli(args: Vec<String>) -> (bool, String, String) {
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_hanoi247")).args(args).output().unwrap()
    })
    .await
    .unwrap();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (output.status.success(), text(&output.stdout), text(&output.stderr))
}

/// `hanoi247 <args> --config <client config of node's client name>`.
async fn cli_as(net: &Network, node: &str, name: &str, args: &[&str]) -> (bool, String, String) {
    let mut all: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    all.extend(["--config".to_owned(), net.client_config_path_of(node, name).display().to_string()]);
    cli(all).await
}

async fn get(desk: &mut hanoi247::cli::desk_client::DeskClient, id: &str) -> (Message, Vec<Message>) {
    let got = desk.get(GetRequest { id: id.to_owned() }).await.unwrap().into_inner();
    (got.message.unwrap(), got.replies)
}

/// A request from VN answered by FR (with the answering State's own restrictions in words):
/// the request's id, once ANSWERED at VN.
async fn answered_request(net: &Network) -> String {
    let mut vn = net.desk_as("VN", "officer");
    let mut fr = net.desk_as("FR", "officer");
    let mut request = preservation_request("FR");
    request.body = "Subscriber of jane.doe@example.org, the account behind the threats".into();
    let id = submit(&mut vn, request).await;
    wait_state(&mut fr, &id, MessageState::Received).await;
    let respond = RespondRequest {
        id: id.clone(),
        text: "Preserved: mailbox of Jane Doe, 3 GB".into(),
        handling_code: HandlingCode::H3 as i32,
        handling_restrictions: "Only for the investigating judge in Hanoi".into(),
        ..Default::default()
    };
    fr.respond(respond).await.unwrap();
    wait_state(&mut vn, &id, MessageState::Answered).await;
    // The response itself is stored at VN (its reply), not only the request's state.
    eventually("the response is stored at VN", async || get(&mut vn, &id).await.1.len() >= 2).await;
    id
}

fn close(id: &str, reason: &str) -> CloseCaseRequest {
    CloseCaseRequest { id: id.to_owned(), reason: reason.to_owned() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_case_marks_its_chain_and_bad_input_changes_nothing() {
    let mut net = Network::with_clients(&["VN", "FR"], &CLIENTS).await;
    net.start("VN").await;
    net.start("FR").await;
    let id = answered_request(&net).await;
    let mut officer = net.desk_as("VN", "officer");
    let (_, replies) = get(&mut officer, &id).await;
    let response_id = replies.last().unwrap().envelope.as_ref().unwrap().id.clone();

    // Bad input: the right status, the field or id named, nothing closed.
    let refusals: Vec<(&str, CloseCaseRequest, Code, String)> = vec![
        ("not an id", close("case-42", ""), Code::InvalidArgument, "id".into()),
        (
            "an unknown id",
            close("0190a1b2-0000-7000-8000-000000000000", ""),
            Code::NotFound,
            "0190a1b2-0000-7000-8000-000000000000".into(),
        ),
        (
            "a reason with a control character",
            close(&id, "done\u{7}"),
            Code::InvalidArgument,
            "reason".into(),
        ),
        (
            "a reply, not a request",
            close(&response_id, ""),
            Code::FailedPrecondition,
            "is not a request".into(),
        ),
    ];
    for (what, request, code, named) in refusals {
        let status = officer.close_case(request).await.unwrap_err();
        assert_eq!(status.code(), code, "{what}: {status:?}");
        assert!(status.message().contains(&named), "{what}: {named} not in {}", status.message());
    }
    for name in ["police", "operator", "audit"] {
        let status = net.desk_as("VN", name).close_case(close(&id, "")).await.unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{name}: {status:?}");
    }
    let (request, replies) = get(&mut officer, &id).await;
    assert!(request.closed_at.is_none() && replies.iter().all(|r| r.closed_at.is_none()), "nothing closed");

    // Closed from the response's request: the request and every reply, with who and when.
    let closed = officer.close_case(close(&id, "MLA request filed, case over")).await.unwrap().into_inner();
    let message = closed.message.unwrap();
    assert!(message.closed_at.is_some());
    assert_eq!(message.closed_by, "officer");
    assert_eq!(message.close_reason, "MLA request filed, case over");
    assert_eq!(message.state(), MessageState::Answered, "closing is not a state");
    assert_eq!(closed.closed_ids.len(), 1 + replies.len(), "{:?}", closed.closed_ids);
    assert_eq!(closed.closed_ids[0], id);
    let (_, replies) = get(&mut officer, &id).await;
    assert!(replies.iter().all(|r| r.closed_at.is_some() && r.closed_by == "officer"));

    // Twice: refused, naming when and by whom; nothing changes.
    let status = officer.close_case(close(&id, "again")).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("already closed at") && status.message().contains("by officer"),
        "{status:?}"
    );
    assert_eq!(get(&mut officer, &id).await.0.close_reason, "MLA request filed, case over");

    // A lifecycle event per envelope and the audit records.
    let mut events = officer.watch(WatchRequest { after_sequence: Some(0) }).await.unwrap().into_inner();
    let closed_event = tokio::time::timeout(DEADLINE, async {
        loop {
            let event = events.next().await.unwrap().unwrap();
            if event.message_id == id && event.note == "case closed by officer" {
                return event;
            }
        }
    })
    .await
    .expect("a lifecycle event for the closing");
    assert_eq!(closed_event.state(), MessageState::Answered);
    let mut auditor = net.desk_as("VN", "audit");
    let request = ListAuditRequest { message_id: id.clone(), ..Default::default() };
    let mut stream = auditor.list_audit(request).await.unwrap().into_inner();
    let mut records = Vec::new();
    while let Some(record) = tokio::time::timeout(DEADLINE, stream.next()).await.unwrap() {
        records.push(record.unwrap());
    }
    assert!(records.iter().any(|r| r.action == "CloseCase" && r.who == "officer (officer)"), "{records:?}");
    assert!(records.iter().any(|r| r.action == "CLOSED"), "{records:?}");
    assert!(
        records.iter().all(|r| !r.details.contains("MLA request filed")),
        "the reason stays out of the audit log"
    );

    // The CLI and the lists say CLOSED; the peer knows nothing of it.
    let (ok, stdout, stderr) = cli_as(&net, "VN", "officer", &["show", &id]).await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("ANSWERED CLOSED") && stdout.contains("CLOSED at "), "{stdout}");
    let (ok, stdout, _) = cli_as(&net, "VN", "officer", &["outbox"]).await;
    assert!(ok && stdout.contains("ANSWERED CLOSED"), "{stdout}");
    let mut fr = net.desk_as("FR", "officer");
    assert!(get(&mut fr, &id).await.0.closed_at.is_none(), "closing is this node's own decision");

    // A closed case takes no more actions: cancelling it at VN, acknowledging or answering a
    // received request closed at FR are refused, and nothing changes.
    let cancel = hanoi247::proto::CancelRequest { id: id.clone(), reason: "late".into() };
    let status = net.desk_as("VN", "operator").cancel(cancel).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains("was closed at"), "{status:?}");
    let received =
        submit(&mut officer, advice_request("FR", hanoi247::proto::Precedence::Routine, "closed unanswered"))
            .await;
    wait_state(&mut fr, &received, MessageState::Received).await;
    fr.close_case(close(&received, "handled by phone")).await.unwrap();
    let ack = hanoi247::proto::AcknowledgeRequest { id: received.clone(), note: String::new() };
    let status = fr.acknowledge(ack).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains("nothing more is done in it"), "{status:?}");
    let answer = RespondRequest { id: received.clone(), text: "late".into(), ..Default::default() };
    assert_eq!(fr.respond(answer).await.unwrap_err().code(), Code::FailedPrecondition);
    let (at_fr, replies) = get(&mut fr, &received).await;
    assert_eq!((at_fr.state(), replies.len()), (MessageState::Received, 0), "nothing queued");

    // A case with an envelope still to be sent cannot be closed: it would lose its content.
    net.stop("FR").await;
    let waiting =
        submit(&mut officer, advice_request("FR", hanoi247::proto::Precedence::Routine, "waits")).await;
    let status = officer.close_case(close(&waiting, "")).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains("still waits to be sent"), "{status:?}");
    assert!(get(&mut officer, &waiting).await.0.closed_at.is_none());
    // The CLI: one actionable line, a failure exit.
    let (ok, _, stderr) = cli_as(&net, "VN", "officer", &["close", &waiting]).await;
    assert!(!ok && stderr.contains("still waits to be sent"), "{stderr}");
    net.stop("VN").await;
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_case_loses_its_content_after_the_period_and_its_proofs_still_verify() {
    let mut net = Network::with_clients(&["VN", "FR"], &CLIENTS).await;
    // Retention looks often (the interval is real time); the period is passed by the clock.
    net.edit_config(
        "VN",
        "events = \"30days\"\ninterval = \"1h\"",
        "events = \"30days\"\ninterval = \"100ms\"",
    );
    let manual = Clock::manual(SystemTime::now());
    net.start_with_clock("VN", manual.clock()).await;
    net.start("FR").await;
    let id = answered_request(&net).await;
    let mut officer = net.desk_as("VN", "officer");
    let dir = tempfile::tempdir().unwrap();

    // A proof written while the content is there (v1).
    let before = dir.path().join("before.json");
    let (ok, stdout, stderr) =
        cli_as(&net, "VN", "officer", &["show", &id, "--proof", &before.display().to_string()]).await;
    assert!(ok && stdout.contains("written to"), "{stderr}");
    let before_json = read_json(&before);
    assert_eq!(before_json["format"], "hanoi247-proof-v1");

    // Closed with the CLI.
    let (ok, stdout, stderr) = cli_as(&net, "VN", "officer", &["close", &id, "--reason", "case over"]).await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("CLOSED at ") && stdout.contains("case closed: 3 envelopes"), "{stdout}");

    // Not yet: a day later everything is still there.
    manual.advance(Duration::from_secs(86_400));
    let (request, _) = get(&mut officer, &id).await;
    assert!(request.content_removed_at.is_none());
    assert!(!request.envelope.as_ref().unwrap().body.is_empty());

    // Past `[retention] closed_content` (365 days by default): the content goes.
    manual.advance(Duration::from_secs(365 * 86_400));
    eventually("the case's content is removed", async || {
        let (request, replies) = get(&mut officer, &id).await;
        request.content_removed_at.is_some() && replies.iter().all(|r| r.content_removed_at.is_some())
    })
    .await;
    let (request, replies) = get(&mut officer, &id).await;
    let envelope = request.envelope.as_ref().unwrap();
    assert_eq!((envelope.subject.as_str(), envelope.body.as_str()), ("", ""));
    assert!(envelope.preservation.as_ref().unwrap().facts.is_empty());
    assert_eq!(envelope.case_reference, before_json["envelope"]["readable"]["case_reference"]);
    assert!(!envelope.origin_signature.is_empty(), "the signature stays");
    assert!(request.content_removed.iter().any(|f| f == "body"), "{:?}", request.content_removed);
    assert!(request.content_removed.iter().any(|f| f == "close_reason"));
    assert_eq!(hex::encode(&request.envelope_sha256), before_json["envelope"]["sha256"].as_str().unwrap());
    assert_eq!(request.state(), MessageState::Answered, "states stay");
    let removed_at = hanoi247::domain::timestamp::to_system(request.content_removed_at.as_ref().unwrap());
    assert!(removed_at >= manual.now() - Duration::from_secs(3600), "removed at the node's time");
    let response = replies
        .iter()
        .find(|r| r.envelope.as_ref().unwrap().kind() == hanoi247::proto::EnvelopeKind::Response)
        .unwrap();
    let response_envelope = response.envelope.as_ref().unwrap();
    assert_eq!(response_envelope.body, "");
    assert_eq!(response_envelope.handling_restrictions, "");
    assert_eq!(response_envelope.handling_code(), HandlingCode::H3, "the code stays, its words go");

    // `show` says what was removed and when, in text and JSON, and holds none of it.
    let (ok, stdout, stderr) = cli_as(&net, "VN", "officer", &["show", &id]).await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("CONTENT REMOVED at ") && stdout.contains("body"), "{stdout}");
    assert!(
        !stdout.contains("jane.doe") && !stdout.contains("Jane Doe") && !stdout.contains("judge"),
        "{stdout}"
    );
    let (ok, stdout, _) = cli_as(&net, "VN", "officer", &["show", &id, "--json"]).await;
    assert!(ok);
    let shown: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(shown["closed"], true);
    assert!(shown["content_removed_at"].as_str().is_some_and(|at| at.starts_with("20")), "{shown}");
    assert!(shown["content_removed"].as_array().unwrap().iter().any(|f| f == "subject"), "{shown}");
    assert!(!stdout.contains("jane.doe"), "{stdout}");

    // Each removal is an audit record, and the chain still verifies.
    let mut auditor = net.desk_as("VN", "audit");
    let mut stream = auditor
        .list_audit(ListAuditRequest { message_id: id.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let mut records = Vec::new();
    while let Some(record) = tokio::time::timeout(DEADLINE, stream.next()).await.unwrap() {
        records.push(record.unwrap());
    }
    let removal = records.iter().find(|r| r.action == "CONTENT_REMOVED").expect("a removal record");
    assert_eq!(removal.who, "node");
    assert!(removal.details.contains("[retention] closed_content"), "{removal:?}");
    assert!(!removal.details.contains("jane"), "{removal:?}");
    let (ok, stdout, stderr) = cli_as(&net, "VN", "audit", &["audit", "verify"]).await;
    assert!(ok, "audit verify: {stdout}{stderr}");

    // A proof written now is v3 (the digest, no content); both proofs verify.
    let after = dir.path().join("after.json");
    let (ok, _, stderr) =
        cli_as(&net, "VN", "officer", &["show", &id, "--proof", &after.display().to_string()]).await;
    assert!(ok, "{stderr}");
    let after_json = read_json(&after);
    assert_eq!(after_json["format"], "hanoi247-proof-v3");
    assert!(after_json["envelope"].get("canonical_base64").is_none(), "{after_json}");
    assert_eq!(after_json["envelope"]["sha256"], before_json["envelope"]["sha256"]);
    assert!(!after_json.to_string().contains("jane.doe"));
    for file in [&before, &after] {
        let (ok, stdout, stderr) = verify(file, None).await;
        assert!(ok, "{}: {stderr}", file.display());
        assert!(stdout.contains("receipt: node FR"), "{stdout}");
    }
    let network_ca = net.config("VN").tls.network_ca;
    let (ok, stdout, stderr) = verify(&after, Some(&network_ca)).await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("content removed at"), "{stdout}");
    let (ok, stdout, _) = cli(vec!["verify".into(), after.display().to_string(), "--json".into()]).await;
    assert!(ok && stdout.contains("\"content_removed\""), "{stdout}");

    // Tampered v3 files fail, naming the part.
    let tampered_digest = |proof: &mut Value| {
        let digest = proof["envelope"]["sha256"].as_str().unwrap();
        let first = if digest.starts_with('0') { "1" } else { "0" };
        proof["envelope"]["sha256"] = Value::String(format!("{first}{}", digest.get(1..).unwrap()));
    };
    assert_tamper_fails(
        &after_json,
        dir.path(),
        "another digest",
        "origin.signature_base64",
        tampered_digest,
    )
    .await;
    assert_tamper_fails(&after_json, dir.path(), "another id", "envelope.id", |proof| {
        proof["envelope"]["id"] = Value::String("0190a1b2-0000-7000-8000-000000000000".into());
    })
    .await;
    assert_tamper_fails(
        &after_json,
        dir.path(),
        "a changed kept field",
        "envelope.readable.case_reference",
        |proof| {
            proof["envelope"]["readable"]["case_reference"] = Value::String("XX-1".into());
        },
    )
    .await;
    assert_tamper_fails(
        &after_json,
        dir.path(),
        "a receipt signature",
        "receipt.signature_base64",
        |proof| {
            crate::signing::flip_base64(&mut proof["receipt"]["signature_base64"], -3);
        },
    )
    .await;
    assert_tamper_fails(
        &after_json,
        dir.path(),
        "bytes in a v3 file",
        "envelope.canonical_base64",
        |proof| {
            proof["envelope"]["canonical_base64"] = before_json["envelope"]["canonical_base64"].clone();
        },
    )
    .await;
    assert_tamper_fails(&after_json, dir.path(), "v3 called v1", "envelope.removed", |proof| {
        proof["format"] = Value::String("hanoi247-proof-v1".into());
    })
    .await;

    // The other node keeps its copy: closing and removal are this node's own.
    let mut fr = net.desk_as("FR", "officer");
    let (at_fr, _) = get(&mut fr, &id).await;
    assert!(at_fr.closed_at.is_none() && at_fr.content_removed_at.is_none());
    assert!(at_fr.envelope.as_ref().unwrap().body.contains("jane.doe"));

    // FR resending its response (a receipt it never got): still the duplicate, by the digest kept.
    let response_id = response_envelope.id.clone();
    let original = get(&mut fr, &response_id).await.0.envelope.unwrap();
    assert!(!original.body.is_empty());
    let config = net.config("FR");
    let signer =
        hanoi247::trust::signing::Signer::load(&config.tls.cert, &config.tls.key, &config.tls.network_ca)
            .unwrap();
    let mut resent = original.clone();
    resent.origin_signature.clear();
    resent.origin_batch = None;
    signer.sign_envelope(&mut resent).unwrap();
    let request = hanoi247::proto::DeliverRequest { envelopes: vec![resent], ..Default::default() };
    let results = net.peer_client("FR", "VN").deliver(request).await.unwrap().into_inner().results;
    match &results[0].outcome {
        Some(hanoi247::proto::delivery_result::Outcome::Receipt(receipt)) => {
            assert!(receipt.duplicate, "{receipt:?}")
        }
        other => panic!("the resent response: {other:?}"),
    }
    assert!(get(&mut officer, &response_id).await.0.content_removed_at.is_some(), "nothing restored");

    net.stop("VN").await;
    net.stop("FR").await;
}

/// The text between `start` and the next `end` in `text`.
fn between<'a>(text: &'a str, start: &str, end: &str) -> &'a str {
    let from = text.find(start).unwrap_or_else(|| panic!("{start} not in {text}")) + start.len();
    let to = text[from..].find(end).unwrap() + from;
    &text[from..to]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_closes_a_case_with_the_form_token_and_shows_what_was_removed() {
    use crate::console::{browser, console_port, fetch};
    let mut net = Network::with_clients(&["VN", "FR"], &CLIENTS).await;
    net.edit_config(
        "VN",
        "events = \"30days\"\ninterval = \"1h\"",
        "events = \"30days\"\ninterval = \"100ms\"",
    );
    net.edit_config("VN", "closed_content = \"365days\"", "closed_content = \"30days\"");
    let manual = Clock::manual(SystemTime::now());
    net.start_with_clock("VN", manual.clock()).await;
    net.start("FR").await;
    let id = answered_request(&net).await;
    let mut desk = net.desk_as("VN", "officer");
    let (port, officer) = (console_port(&net, "VN"), browser(&net, "VN", "officer"));
    let page_path = format!("/message/{id}");
    let close_path = format!("/message/{id}/close");

    let page = fetch(officer.clone(), port, &page_path, None).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains(&format!("action=\"{close_path}\"")), "{}", page.body);
    let token = between(&page.body, "name=\"csrf\" value=\"", "\"").to_owned();
    // The operator's page has no such button: closing is for officers.
    let operator = browser(&net, "VN", "operator");
    let operator_page = fetch(operator.clone(), port, &page_path, None).await;
    assert!(!operator_page.body.contains(&close_path), "{}", operator_page.body);

    // Without the form token: refused, nothing closed.
    let refused = fetch(officer.clone(), port, &close_path, Some("reason=x")).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(get(&mut desk, &id).await.0.closed_at.is_none());

    let form = format!("csrf={token}&reason=case+over");
    let done = fetch(officer.clone(), port, &close_path, Some(&form)).await;
    assert_eq!(done.status, 303, "{}", done.body);
    let (closed, _) = get(&mut desk, &id).await;
    assert!(closed.closed_at.is_some());
    assert_eq!((closed.closed_by.as_str(), closed.close_reason.as_str()), ("officer", "case over"));
    let page = fetch(officer.clone(), port, &page_path, None).await;
    assert!(page.body.contains("badge-closed") && page.body.contains("closed_at"), "{}", page.body);
    assert!(!page.body.contains(&format!("action=\"{close_path}\"")), "closed once: {}", page.body);
    let outbox = fetch(officer.clone(), port, "/outbox", None).await;
    assert!(outbox.body.contains("badge-closed"), "{}", outbox.body);
    // Twice (a stale page): the desk's refusal is shown, nothing changes.
    let again = fetch(officer.clone(), port, &close_path, Some(&form)).await;
    assert!(again.body.contains("already closed"), "{} {}", again.status, again.body);

    // `[retention] closed_content = "30days"` later, the page says what was removed and when.
    manual.advance(Duration::from_secs(31 * 86_400));
    eventually("the content is removed", async || get(&mut desk, &id).await.0.content_removed_at.is_some())
        .await;
    let page = fetch(officer.clone(), port, &page_path, None).await;
    assert!(page.body.contains("content_removed_at"), "{}", page.body);
    assert!(page.body.contains("Content removed (retention of closed cases)"), "{}", page.body);
    assert!(!page.body.contains("jane.doe") && !page.body.contains("Jane Doe"), "{}", page.body);
    let outbox = fetch(officer, port, "/outbox", None).await;
    assert!(outbox.body.contains("<em>Content removed (retention of closed cases)</em>"), "{}", outbox.body);
    net.stop("VN").await;
    net.stop("FR").await;
}
