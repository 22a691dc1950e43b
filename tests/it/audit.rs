//! Issue 5 (tamper-evident audit log): every state change of a message and every desk call that
//! reads or changes one is appended to a hash chain; `hanoi247 audit verify` (the real binary)
//! verifies it and names the first broken link when a record in the store was edited or
//! deleted; only the auditor may read it.

use std::process::Command;

use hanoi247::domain::access::Role;
use hanoi247::proto::{
    AcknowledgeRequest, CancelRequest, GetRequest, ListAuditRequest, ListAuditResponse, MessageState,
    Precedence, RespondRequest,
};
use prost::Message as _;
use tokio_stream::StreamExt;

use crate::support::*;

/// Runs `hanoi247 audit <args> --config <config>`: (success, stdout, stderr).
fn audit_cli(config: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_hanoi247"))
        .arg("audit")
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (output.status.success(), text(&output.stdout), text(&output.stderr))
}

async fn audit_log(
    desk: &mut hanoi247::cli::desk_client::DeskClient,
    message_id: &str,
) -> Vec<ListAuditResponse> {
    let request = ListAuditRequest { message_id: message_id.into(), ..Default::default() };
    let mut stream = desk.list_audit(request).await.unwrap().into_inner();
    let mut records = Vec::new();
    while let Some(record) = tokio::time::timeout(DEADLINE, stream.next()).await.unwrap() {
        records.push(record.unwrap());
    }
    records
}

fn has(records: &[ListAuditResponse], who: &str, action: &str, message_id: &str) -> bool {
    records.iter().any(|r| r.who == who && r.action == action && r.message_id == message_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chain_records_who_did_what_and_names_an_edited_or_deleted_record() {
    let clients = [
        ("VN", "duty", Role::Officer),
        ("VN", "ops", Role::Operator),
        ("VN", "audit", Role::Auditor),
        ("VN", "police", Role::Agency),
        ("FR", "duty", Role::Officer),
        ("FR", "audit", Role::Auditor),
    ];
    let mut net = Network::with_clients(&["VN", "FR"], &clients).await;
    let vn_process = net.spawn("VN").await;
    net.start("FR").await;
    let (mut duty, mut ops, mut vn_audit) =
        (net.desk_as("VN", "duty"), net.desk_as("VN", "ops"), net.desk_as("VN", "audit"));
    let (mut fr_desk, mut fr_audit) = (net.desk_as("FR", "duty"), net.desk_as("FR", "audit"));

    // A request flows: submitted, delivered, read and acknowledged at FR, the acknowledgement
    // comes back.
    let id = submit(&mut duty, preservation_request("FR")).await;
    wait_state(&mut fr_desk, &id, MessageState::Received).await;
    fr_desk.acknowledge(AcknowledgeRequest { id: id.clone(), note: "taken".into() }).await.unwrap();
    wait_state(&mut duty, &id, MessageState::Acknowledged).await;
    ops.get(GetRequest { id: id.clone() }).await.unwrap();
    fr_desk
        .respond(RespondRequest { id: id.clone(), text: "preserved".into(), ..Default::default() })
        .await
        .unwrap();
    let withdrawn = submit(&mut duty, advice_request("FR", Precedence::Routine, "withdrawn")).await;
    ops.cancel(CancelRequest { id: withdrawn.clone(), reason: "sent in error".into() }).await.unwrap();

    let vn_log = audit_log(&mut vn_audit, &id).await;
    // FR's acknowledgement may overtake its receipt (QUEUED straight to ACKNOWLEDGED, no
    // DELIVERED entry); whenever the timeline has DELIVERED, the node's delivery task recorded it.
    let at_vn = duty.get(GetRequest { id: id.clone() }).await.unwrap().into_inner().message.unwrap();
    if states(&at_vn).contains(&MessageState::Delivered) {
        assert!(has(&vn_log, "node", "DELIVERED", &id), "VN: node DELIVERED missing from {vn_log:#?}");
    }
    for (who, action) in [
        ("duty (officer)", "Submit"),
        ("duty (officer)", "QUEUED"),
        ("peer:FR", "ACKNOWLEDGED"),
        ("duty (officer)", "Get"),
        ("ops (operator)", "Get"),
    ] {
        assert!(has(&vn_log, who, action, &id), "VN: {who} {action} missing from {vn_log:#?}");
    }
    assert!(vn_log.iter().all(|r| r.message_id == id), "the filter keeps only {id}");
    let cancelled = audit_log(&mut vn_audit, &withdrawn).await;
    assert!(has(&cancelled, "ops (operator)", "Cancel", &withdrawn), "{cancelled:#?}");
    assert!(has(&cancelled, "ops (operator)", "CANCELLED", &withdrawn), "{cancelled:#?}");
    let fr_log = audit_log(&mut fr_audit, &id).await;
    for (who, action) in [
        ("peer:VN", "RECEIVED"),
        ("duty (officer)", "Acknowledge"),
        ("duty (officer)", "ACKNOWLEDGED"),
        ("duty (officer)", "Respond"),
        ("duty (officer)", "ANSWERED"),
    ] {
        assert!(has(&fr_log, who, action, &id), "FR: {who} {action} missing from {fr_log:#?}");
    }
    // The whole chain: gap-free from 1, each record linked to the one before; reading it is
    // itself recorded.
    let whole = audit_log(&mut vn_audit, "").await;
    assert_eq!(
        whole.iter().map(|r| r.sequence).collect::<Vec<_>>(),
        (1..=whole.len() as u64).collect::<Vec<_>>()
    );
    assert!(has(&whole, "audit (auditor)", "ListAudit", ""), "{whole:#?}");
    hanoi247::store::audit::verify(&whole, None).unwrap();

    // Only the auditor reads the audit log, and nothing else.
    let mut police = net.desk_as("VN", "police");
    for (desk, who) in [(&mut duty, "officer"), (&mut ops, "operator"), (&mut police, "agency")] {
        let status = desk.list_audit(ListAuditRequest::default()).await.expect_err(who);
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{who}: {status:?}");
        assert!(status.message().contains("ListAudit"), "{status:?}");
    }
    let status = vn_audit.get(GetRequest { id: id.clone() }).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "the auditor reads no messages: {status:?}");
    let status = police.get(GetRequest { id: id.clone() }).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "another's request: {status:?}");
    // Refusals are recorded too, with who tried what.
    let refusals = audit_log(&mut vn_audit, "").await;
    let refused = |who: &str, action: &str, message_id: &str| {
        refusals.iter().any(|r| {
            r.who == who
                && r.action == action
                && r.message_id == message_id
                && r.details.starts_with("REFUSED: ")
        })
    };
    assert!(refused("duty (officer)", "ListAudit", ""), "{refusals:#?}");
    assert!(refused("audit (auditor)", "Get", ""), "{refusals:#?}");
    assert!(refused("police (agency)", "Get", &id), "{refusals:#?}");
    // A bad filter names the field.
    let status = vn_audit
        .list_audit(ListAuditRequest { message_id: "nope".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("message_id"), "{status:?}");

    // Untouched, the chain verifies through the real command line.
    let auditor = net.client_config_path_of("VN", "audit");
    let (ok, stdout, stderr) = audit_cli(&auditor, &["verify"]);
    assert!(ok && stdout.contains("audit log intact"), "{stdout}\n{stderr}");
    let (ok, stdout, _) = audit_cli(&auditor, &["list", "--message", &id]);
    assert!(ok && stdout.contains("ACKNOWLEDGED") && stdout.contains("peer:FR"), "{stdout}");
    let (ok, stdout, _) = audit_cli(&auditor, &["list", "--json"]);
    let listed: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(ok && listed.as_array().unwrap().len() > whole.len(), "{stdout}");

    // Someone with access to the files edits one record (who did it) while the node is down.
    assert!(vn_process.terminate().await.success());
    let data_dir = net.config("VN").data_dir;
    let edited = whole.iter().find(|r| r.action == "Submit").unwrap().sequence;
    let original = {
        let db = sled::open(&data_dir).unwrap();
        let key = hanoi247::store::audit_record_key(edited);
        let original = db.get(&key).unwrap().unwrap();
        let mut record = ListAuditResponse::decode(original.as_ref()).unwrap();
        record.who = "ops (operator)".into();
        db.insert(&key, record.encode_to_vec()).unwrap();
        db.flush().unwrap();
        original
    };
    let vn_process = net.spawn("VN").await;
    let (ok, stdout, stderr) = audit_cli(&auditor, &["verify"]);
    assert!(!ok, "an edited record must fail verification: {stdout}");
    assert!(stderr.contains(&format!("record {edited}: hash mismatch")), "{stderr}");

    // Put back, it verifies again; then one record is deleted.
    assert!(vn_process.terminate().await.success());
    let deleted = edited + 2;
    {
        let db = sled::open(&data_dir).unwrap();
        db.insert(hanoi247::store::audit_record_key(edited), original).unwrap();
        db.flush().unwrap();
    }
    let vn_process = net.spawn("VN").await;
    let (ok, stdout, stderr) = audit_cli(&auditor, &["verify", "--json"]);
    assert!(ok, "restored: {stdout}\n{stderr}");
    let verified: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let anchor = verified["head"].as_str().unwrap().to_owned();
    assert!(vn_process.terminate().await.success());
    {
        let db = sled::open(&data_dir).unwrap();
        db.remove(hanoi247::store::audit_record_key(deleted)).unwrap().expect("the record was there");
        db.flush().unwrap();
    }
    let _vn_process = net.spawn("VN").await;
    let (ok, stdout, stderr) = audit_cli(&auditor, &["verify", "--anchor", &anchor]);
    assert!(!ok, "a deleted record must fail verification: {stdout}");
    assert!(stderr.contains(&format!("record {deleted} is missing (deleted)")), "{stderr}");
    net.stop("FR").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_record_and_a_deleted_last_record_are_named() {
    let clients = [("VN", "duty", Role::Officer), ("VN", "audit", Role::Auditor)];
    let net = Network::with_clients(&["VN", "FR"], &clients).await;
    let auditor = net.client_config_path_of("VN", "audit");
    let vn_process = net.spawn("VN").await;
    let mut duty = net.desk_as("VN", "duty");
    for _ in 0..3 {
        submit(&mut duty, preservation_request("FR")).await;
    }
    assert!(vn_process.terminate().await.success());
    let data_dir = net.config("VN").data_dir;

    // Bytes that are no record at all.
    let original = {
        let db = sled::open(&data_dir).unwrap();
        let key = hanoi247::store::audit_record_key(2);
        let original = db.insert(&key, &[0xff, 0xff, 0xff][..]).unwrap().expect("record 2 was there");
        db.flush().unwrap();
        original
    };
    let vn_process = net.spawn("VN").await;
    let (ok, _, stderr) = audit_cli(&auditor, &["verify"]);
    assert!(!ok && stderr.contains("record 2 is damaged"), "{stderr}");
    let (ok, stdout, _) = audit_cli(&auditor, &["list"]);
    assert!(ok && stdout.contains("DAMAGED"), "{stdout}");
    assert!(vn_process.terminate().await.success());

    // Repaired, but the newest record deleted: the node goes on from its chain head, so the
    // gap shows.
    let last = {
        let db = sled::open(&data_dir).unwrap();
        db.insert(hanoi247::store::audit_record_key(2), original).unwrap();
        let (key, _) = db.scan_prefix(b"h").last().unwrap().unwrap();
        db.remove(&key).unwrap();
        db.flush().unwrap();
        u64::from_be_bytes(key[1..9].try_into().unwrap())
    };
    let _vn_process = net.spawn("VN").await;
    let (ok, _, stderr) = audit_cli(&auditor, &["verify"]);
    assert!(!ok && stderr.contains(&format!("record {last} is missing (deleted)")), "{stderr}");
    // A malformed anchor is refused by name.
    let (ok, _, stderr) = audit_cli(&auditor, &["verify", "--anchor", "12:zz"]);
    assert!(!ok && stderr.contains("--anchor") && stderr.contains("64 digits"), "{stderr}");
}

/// Issue 14, bullet 2: the auditor sees who did what to which message, never content. Answers,
/// acknowledgement notes, dispute and cancel reasons reach the audit records of both nodes only
/// as a length and a SHA-256 digest; the officers still read the text itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_holds_no_content_only_lengths_and_digests() {
    use hanoi247::proto::DisputePrecedenceRequest;
    use hanoi247::store::audit::text_digest;

    let clients = [
        ("VN", "duty", Role::Officer),
        ("VN", "ops", Role::Operator),
        ("VN", "audit", Role::Auditor),
        ("FR", "duty", Role::Officer),
        ("FR", "audit", Role::Auditor),
    ];
    let mut net = Network::with_clients(&["VN", "FR"], &clients).await;
    net.start("VN").await;
    net.start("FR").await;
    let (mut vn, mut fr) = (net.desk_as("VN", "duty"), net.desk_as("FR", "duty"));
    let (mut vn_audit, mut fr_audit) = (net.desk_as("VN", "audit"), net.desk_as("FR", "audit"));
    let note = "suspect known as Rook, device seized in Lyon";
    let answer = "subscriber: Jean Martin, 12 rue des Lilas; IP 198.51.100.7";
    let dispute_reason = "the account of Marie Durand is already frozen";
    let cancel_reason = "the informant Paul Leroy withdrew his statement";
    let secrets = [note, answer, dispute_reason, cancel_reason];

    // An answered request: acknowledged with a note, then answered.
    let answered = submit(&mut vn, preservation_request("FR")).await;
    wait_state(&mut fr, &answered, MessageState::Received).await;
    fr.acknowledge(AcknowledgeRequest { id: answered.clone(), note: note.into() }).await.unwrap();
    fr.respond(RespondRequest { id: answered.clone(), text: answer.into(), ..Default::default() })
        .await
        .unwrap();
    wait_state(&mut vn, &answered, MessageState::Answered).await;
    // A disputed request, then withdrawn.
    let disputed = submit(&mut vn, advice_request("FR", Precedence::Flash, "disputed")).await;
    wait_state(&mut fr, &disputed, MessageState::Received).await;
    let dispute = DisputePrecedenceRequest {
        id: disputed.clone(),
        precedence: Precedence::Routine as i32,
        reason: dispute_reason.into(),
    };
    fr.dispute_precedence(dispute).await.unwrap();
    let mut at_vn = vn.clone();
    eventually("VN has the dispute", async || {
        let got = at_vn.get(GetRequest { id: disputed.clone() }).await.unwrap().into_inner();
        !got.replies.is_empty()
    })
    .await;
    let mut ops = net.desk_as("VN", "ops");
    ops.cancel(CancelRequest { id: disputed.clone(), reason: cancel_reason.into() }).await.unwrap();
    wait_state(&mut fr, &disputed, MessageState::Cancelled).await;

    // The officers read the text, in the replies and in the timelines.
    let got = vn.get(GetRequest { id: answered.clone() }).await.unwrap().into_inner();
    assert!(got.replies.iter().any(|r| r.envelope.as_ref().unwrap().body == answer), "{got:#?}");
    let notes = |m: &hanoi247::proto::Message| m.timeline.iter().map(|t| t.note.clone()).collect::<Vec<_>>();
    assert!(notes(got.message.as_ref().unwrap()).iter().any(|n| n.contains(answer)), "{got:#?}");
    let at_fr = fr.get(GetRequest { id: disputed.clone() }).await.unwrap().into_inner().message.unwrap();
    assert!(notes(&at_fr).iter().any(|n| n.contains(cancel_reason)), "{at_fr:#?}");

    // The auditors of both nodes see no word of it: each text stands as its length and digest.
    for (node, desk) in [("VN", &mut vn_audit), ("FR", &mut fr_audit)] {
        let records = audit_log(desk, "").await;
        hanoi247::store::audit::verify(&records, None).unwrap();
        for record in &records {
            let text = format!("{} {} {} {}", record.who, record.action, record.message_id, record.details);
            for secret in secrets {
                // Not even a part of it (the old records kept the first 200 characters).
                assert!(!text.contains(&secret[..12]), "{node}: content in the audit log: {record:#?}");
            }
        }
        let digested = |action: &str, id: &str, secret: &str| {
            records
                .iter()
                .any(|r| r.action == action && r.message_id == id && r.details.contains(&text_digest(secret)))
        };
        match node {
            "VN" => {
                assert!(digested("ANSWERED", &answered, answer), "VN: {records:#?}");
                assert!(digested("ACKNOWLEDGED", &answered, note), "VN: {records:#?}");
                assert!(digested("Cancel", &disputed, cancel_reason), "VN: {records:#?}");
                assert!(digested("CANCELLED", &disputed, cancel_reason), "VN: {records:#?}");
            }
            _ => {
                assert!(digested("Acknowledge", &answered, note), "FR: {records:#?}");
                assert!(digested("Respond", &answered, answer), "FR: {records:#?}");
                assert!(digested("DisputePrecedence", &disputed, dispute_reason), "FR: {records:#?}");
                assert!(digested("CANCELLED", &disputed, cancel_reason), "FR: {records:#?}");
            }
        }
    }
    // Both nodes still serve.
    let after = submit(&mut vn, preservation_request("FR")).await;
    wait_state(&mut fr, &after, MessageState::Received).await;
    net.stop("VN").await;
    net.stop("FR").await;
}
