//! Issue 5, acceptance 3: signed envelopes and receipts. Delivered envelopes carry the origin's
//! signature and the receiver's signed receipt; a tampered envelope is refused by the receiver
//! and nothing is stored; a receipt for other bytes is a failed delivery; a proof file from
//! `show --proof` passes `verify`, and one changed byte anywhere that matters makes it fail.

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hanoi247::domain::identity::Identity;
use hanoi247::proto::delivery_result::Outcome;
use hanoi247::proto::{
    AcknowledgeRequest, DeliverRequest, Envelope, GetProofRequest, GetRequest, MessageState, Receipt,
};
use hanoi247::trust::signing::{self, Signer};
use serde_json::Value;
use tokio_stream::StreamExt;

use crate::support::*;

fn node(net: &Network, code_text: &str) -> Identity {
    Identity::Node { network: net.config(code_text).network.clone(), code: code(code_text) }
}

/// The signer of `node`, from its own key and certificate files.
fn signer_of(net: &Network, node: &str) -> Signer {
    let config = net.config(node);
    Signer::load(&config.tls.cert, &config.tls.key, &config.tls.network_ca).unwrap()
}

/// A request submitted at VN while FR is down: its stored (signed) envelope. VN is stopped after.
async fn stored_envelope(net: &mut Network) -> Envelope {
    net.start("VN").await;
    let mut vn = net.desk("VN");
    let id = submit(&mut vn, preservation_request("FR")).await;
    let envelope = vn.get(GetRequest { id }).await.unwrap().into_inner().message.unwrap().envelope.unwrap();
    net.stop("VN").await;
    envelope
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_envelopes_and_their_receipts_are_signed_and_verify() {
    let mut net = Network::new(&["VN", "FR"]).await;
    net.start("VN").await;
    net.start("FR").await;
    let (mut vn, mut fr) = (net.desk("VN"), net.desk("FR"));
    let id = submit(&mut vn, preservation_request("FR")).await;
    wait_state(&mut vn, &id, MessageState::Delivered).await;

    // At the origin: its own signature and the receipt FR signed.
    let proof = vn.get_proof(GetProofRequest { id: id.clone() }).await.unwrap().into_inner();
    let envelope =
        vn.get(GetRequest { id: id.clone() }).await.unwrap().into_inner().message.unwrap().envelope.unwrap();
    assert!(!envelope.origin_signature.is_empty(), "the stored envelope carries its signature");
    assert_eq!(proof.envelope_canonical, signing::canonical_envelope(&envelope));
    assert_eq!(proof.origin_signature, envelope.origin_signature);
    signing::verify_envelope(&envelope, &proof.origin_certificate).unwrap();
    signing::check_certificate(
        &proof.origin_certificate,
        &proof.network_ca_certificate,
        &node(&net, "VN"),
        std::time::SystemTime::now(),
    )
    .unwrap();
    let receipt = proof.receipt.expect("the receipt is kept with the message");
    assert_eq!(receipt.receiver, "FR");
    assert_eq!(receipt.envelope_sha256, signing::envelope_digest(&envelope).to_vec());
    assert_eq!(proof.receiver_network_ca_certificate, proof.network_ca_certificate, "one network CA");
    signing::verify_receipt(&receipt, &envelope, &node(&net, "FR"), &proof.network_ca_certificate).unwrap();

    // At the receiver: the same envelope bytes, the sender's certificate and the receipt it issued.
    let at_fr = fr.get_proof(GetProofRequest { id: id.clone() }).await.unwrap().into_inner();
    assert_eq!(at_fr.envelope_canonical, proof.envelope_canonical);
    assert_eq!(at_fr.origin_certificate, proof.origin_certificate);
    assert_eq!(at_fr.receipt.as_ref().map(|r| &r.signature), Some(&receipt.signature), "the same receipt");

    // Replies are envelopes too: FR's signed acknowledgement is accepted by VN.
    fr.acknowledge(AcknowledgeRequest { id: id.clone(), note: String::new() }).await.unwrap();
    wait_state(&mut vn, &id, MessageState::Acknowledged).await;
    let replies = vn.get(GetRequest { id: id.clone() }).await.unwrap().into_inner().replies;
    let ack = replies[0].envelope.clone().unwrap();
    let ack_proof = vn.get_proof(GetProofRequest { id: ack.id.clone() }).await.unwrap().into_inner();
    signing::verify_envelope(&ack, &ack_proof.origin_certificate).unwrap();
    assert_eq!(
        hanoi247::domain::identity::identity_of_cert(&ack_proof.origin_certificate).unwrap(),
        node(&net, "FR")
    );
    net.stop("VN").await;
    net.stop("FR").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_or_unsigned_envelope_is_refused_and_nothing_is_stored() {
    let mut net = Network::new(&["VN", "FR"]).await;
    let envelope = stored_envelope(&mut net).await;
    net.start("FR").await;
    let mut as_vn = net.peer_client("VN", "FR");

    let mut changed_byte = envelope.clone();
    changed_byte.subject.replace_range(0..1, "p"); // "Preserve" -> "preserve": one byte
    let mut bad_signature = envelope.clone();
    let last = bad_signature.origin_signature.len() - 1;
    bad_signature.origin_signature[last] ^= 0x01;
    let mut unsigned = envelope.clone();
    unsigned.origin_signature.clear();
    // Signed by a node key, but not by the caller's (FR signs, VN sends).
    let mut signed_by_other = envelope.clone();
    signer_of(&net, "FR").sign_envelope(&mut signed_by_other).unwrap();

    for (what, bad, expected) in [
        ("one changed byte", changed_byte, "does not verify"),
        ("a changed signature byte", bad_signature, "does not verify"),
        ("no signature", unsigned, "missing"),
        ("another node's signature", signed_by_other, "does not verify"),
    ] {
        let results = as_vn
            .deliver(DeliverRequest { envelopes: vec![bad], ..Default::default() })
            .await
            .unwrap()
            .into_inner()
            .results;
        match &results[0].outcome {
            Some(Outcome::Refusal(refusal)) => {
                assert_eq!(refusal.code, tonic::Code::InvalidArgument as i32, "{what}: {refusal:?}");
                assert_eq!(refusal.envelope_id, envelope.id, "{what}");
                assert!(refusal.message.starts_with("origin_signature: "), "{what}: {}", refusal.message);
                assert!(refusal.message.contains(&envelope.id), "{what}: {}", refusal.message);
                assert!(refusal.message.contains(expected), "{what}: {}", refusal.message);
            }
            other => panic!("{what}: expected a refusal, got {other:?}"),
        }
    }
    let mut fr = net.desk("FR");
    assert!(inbox(&mut fr).await.is_empty(), "nothing stored");
    let failures = r#"hanoi247_signature_failures_total{peer="VN",signed="envelope"}"#;
    assert_eq!(metric(&net, "FR", failures).await, Some(4.0), "counted for operators");
    let missing = fr.get(GetRequest { id: envelope.id.clone() }).await.unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);

    // The envelope as VN signed it is accepted, with a receipt that verifies.
    let results = as_vn
        .deliver(DeliverRequest { envelopes: vec![envelope.clone()], ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .results;
    let Some(Outcome::Receipt(receipt)) = results[0].outcome.clone() else { panic!("{results:?}") };
    let ca = hanoi247::trust::tls::load_certs(&net.config("FR").tls.network_ca).unwrap()[0].to_vec();
    signing::verify_receipt(&receipt, &envelope, &node(&net, "FR"), &ca).unwrap();
    assert_eq!(ids(&inbox(&mut fr).await), vec![envelope.id.clone()]);
    net.stop("FR").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_for_other_bytes_is_a_failed_delivery() {
    let mut net = Network::new(&["VN", "FR"]).await;
    let envelope = stored_envelope(&mut net).await;
    net.start("FR").await;
    // FR stores the envelope, but the receipt it keeps is then made one for other bytes (FR
    // refuses other content under a known id, so only its disk can be made to lie)...
    let mut as_vn = net.peer_client("VN", "FR");
    let results = as_vn
        .deliver(DeliverRequest { envelopes: vec![envelope.clone()], ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert!(matches!(results[0].outcome, Some(Outcome::Receipt(_))), "{results:?}");
    net.stop("FR").await;
    {
        use prost::Message as _;
        let mut other = envelope.clone();
        other.body = "a different body".into();
        let db = sled::open(net.config("FR").data_dir).unwrap();
        let id = uuid::Uuid::parse_str(&envelope.id).unwrap();
        let key = [&b"m"[..], id.as_bytes()].concat();
        let mut stored =
            hanoi247::store_proto::StoredMessage::decode(db.get(&key).unwrap().unwrap().as_ref()).unwrap();
        let received_at = stored.receipt.as_ref().unwrap().received_at.unwrap();
        stored.receipt = Some(signer_of(&net, "FR").receipt(&other, "FR", received_at).unwrap());
        db.insert(&key, stored.encode_to_vec()).unwrap();
        db.flush().unwrap();
    }
    net.start("FR").await;

    // ...so the receipt VN gets for its own envelope is for other bytes: not a delivery.
    net.start("VN").await;
    let mut vn = net.desk("VN");
    let deadline = std::time::Instant::now() + DEADLINE;
    let message = loop {
        let message =
            vn.get(GetRequest { id: envelope.id.clone() }).await.unwrap().into_inner().message.unwrap();
        if message.last_error.contains("does not verify") {
            break message;
        }
        assert!(std::time::Instant::now() < deadline, "no receipt failure: {message:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(message.state(), MessageState::WaitingRetry, "{message:?}");
    assert!(
        message
            .last_error
            .starts_with("receipt from FR does not verify: receipt: it is for an envelope with SHA-256"),
        "{}",
        message.last_error
    );
    let proof = vn.get_proof(GetProofRequest { id: envelope.id.clone() }).await.unwrap().into_inner();
    assert_eq!(proof.receipt, None::<Receipt>, "a receipt that does not verify is not kept");
    let failures = r#"hanoi247_signature_failures_total{peer="FR",signed="receipt"}"#;
    assert!(metric(&net, "VN", failures).await >= Some(1.0), "counted for operators");
    net.stop("VN").await;
    net.stop("FR").await;
}

/// The value of one sample of a node's `/metrics`, e.g. `hanoi247_signature_failures_total{...}`.
async fn metric(net: &Network, node: &str, sample: &str) -> Option<f64> {
    use std::io::{Read as _, Write as _};
    let port = net.config(node).metrics.listen.port();
    let sample = sample.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        write!(stream, "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response.lines().find_map(|line| line.strip_prefix(sample.as_str())?.trim().parse().ok())
    })
    .await
    .unwrap()
}

/// Runs the real binary; returns (success, stdout, stderr).
async fn hanoi247(args: Vec<String>) -> (bool, String, String) {
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_hanoi247")).args(args).output().unwrap()
    })
    .await
    .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `hanoi247 show ID --proof FILE` with `node`'s officer client; fails the test unless written.
pub async fn show_proof(net: &Network, node: &str, id: &str, file: &Path) {
    let client = net.client_config_path(node).display().to_string();
    let (ok, stdout, stderr) = hanoi247(vec![
        "show".into(),
        id.to_owned(),
        "--config".into(),
        client,
        "--proof".into(),
        file.display().to_string(),
    ])
    .await;
    assert!(ok, "show --proof failed: {stderr}");
    assert!(stdout.contains("written to"), "{stdout}");
}

pub async fn verify(file: &Path, ca: Option<&Path>) -> (bool, String, String) {
    let mut args = vec!["verify".to_owned(), file.display().to_string()];
    if let Some(ca) = ca {
        args.extend(["--ca".to_owned(), ca.display().to_string()]);
    }
    hanoi247(args).await
}

/// Writes `proof` changed by `change` next to `original` and runs `verify` on it: it must fail,
/// naming `part`.
pub async fn assert_tamper_fails(
    original: &Value,
    dir: &Path,
    what: &str,
    part: &str,
    change: impl FnOnce(&mut Value),
) {
    let mut tampered = original.clone();
    change(&mut tampered);
    assert_ne!(&tampered, original, "{what}: the change changed nothing");
    let path: PathBuf = dir.join(format!("{}.json", what.replace(' ', "-")));
    std::fs::write(&path, serde_json::to_string_pretty(&tampered).unwrap()).unwrap();
    let (ok, stdout, stderr) = verify(&path, None).await;
    assert!(!ok, "{what}: verify passed:\n{stdout}");
    assert!(stderr.contains("NOT VERIFIED"), "{what}: {stderr}");
    assert!(stderr.contains(&format!("{part}: ")), "{what}: expected {part} in: {stderr}");
}

/// Flips one bit of the byte at `index` (from the end when negative) of a base64 field.
pub fn flip_base64(value: &mut Value, index: isize) {
    let mut bytes = BASE64.decode(value.as_str().unwrap()).unwrap();
    let at = if index < 0 { bytes.len() - index.unsigned_abs() } else { index as usize };
    bytes[at] ^= 0x01;
    *value = Value::String(BASE64.encode(bytes));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proof_file_passes_verify_and_one_changed_byte_fails_it() {
    let mut net = Network::new(&["VN", "FR"]).await;
    let other = Network::named(&["VN", "FR"], "hanoi247-test").await;
    net.start("VN").await;
    net.start("FR").await;
    let mut vn = net.desk("VN");
    let id = submit(&mut vn, preservation_request("FR")).await;
    wait_state(&mut vn, &id, MessageState::Delivered).await;

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("proof.json");
    show_proof(&net, "VN", &id, &file).await;

    // The good file passes, with the CA inside it and with the network CA given.
    let (ok, stdout, stderr) = verify(&file, None).await;
    assert!(ok, "verify failed: {stderr}");
    assert!(stdout.starts_with(&format!("VERIFIED: proof of envelope {id}")), "{stdout}");
    assert!(stdout.contains("origin: node VN (spiffe://"), "{stdout}");
    assert!(stdout.contains("signed this envelope"), "{stdout}");
    assert!(stdout.contains("receipt: node FR (spiffe://"), "{stdout}");
    assert!(stdout.contains("acknowledged durable receipt of this envelope at 20"), "{stdout}");
    assert!(stdout.contains("taken from the proof file itself"), "{stdout}");
    let network_ca = net.config("VN").tls.network_ca;
    let (ok, stdout, stderr) = verify(&file, Some(&network_ca)).await;
    assert!(ok, "verify --ca failed: {stderr}");
    assert!(stdout.contains("given with --ca"), "{stdout}");

    // A CA file holding an old and a new network CA (a rotation): the issuer among them is used.
    let both = dir.path().join("both-cas.pem");
    let other_ca = std::fs::read_to_string(other.config("VN").tls.network_ca).unwrap();
    std::fs::write(&both, other_ca + &std::fs::read_to_string(&network_ca).unwrap()).unwrap();
    let (ok, _, stderr) = verify(&file, Some(&both)).await;
    assert!(ok, "verify with two CAs failed: {stderr}");

    // Another network's CA does not vouch for these certificates.
    let (ok, _, stderr) = verify(&file, Some(&other.config("VN").tls.network_ca)).await;
    assert!(!ok, "verified against another network's CA");
    assert!(stderr.contains("origin.certificate_chain: certificate chain:"), "{stderr}");

    let proof: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    // One changed byte in the envelope (in the subject, so it still decodes)...
    let canonical = BASE64.decode(proof["envelope"]["canonical_base64"].as_str().unwrap()).unwrap();
    let subject_at = canonical.windows(8).position(|w| w == b"Preserve").unwrap() as isize;
    assert_tamper_fails(&proof, dir.path(), "envelope byte", "envelope.sha256", |p| {
        flip_base64(&mut p["envelope"]["canonical_base64"], subject_at)
    })
    .await;
    // ...also when the forger fixes the digest and the readable form to match: the signature fails.
    assert_tamper_fails(&proof, dir.path(), "envelope byte with digest", "origin.signature_base64", |p| {
        flip_base64(&mut p["envelope"]["canonical_base64"], subject_at);
        let bytes = BASE64.decode(p["envelope"]["canonical_base64"].as_str().unwrap()).unwrap();
        p["envelope"]["sha256"] = Value::String(signing::hex(&signing::sha256(&bytes)));
        p["envelope"]["readable"]["subject"] = Value::String("Qreserve mailbox".into());
    })
    .await;
    assert_tamper_fails(&proof, dir.path(), "readable form", "envelope.readable.subject", |p| {
        p["envelope"]["readable"]["subject"] = Value::String("Preserve mailboX".into());
    })
    .await;
    assert_tamper_fails(&proof, dir.path(), "origin signature", "origin.signature_base64", |p| {
        flip_base64(&mut p["origin"]["signature_base64"], -1)
    })
    .await;
    assert_tamper_fails(&proof, dir.path(), "receipt time", "receipt.signature_base64", |p| {
        let at = p["receipt"]["received_at"].as_str().unwrap().to_owned();
        // The last digit of the nanoseconds, before the "Z".
        let digit = at.as_bytes()[at.len() - 2];
        let changed = if digit == b'9' { '8' } else { (digit + 1) as char };
        p["receipt"]["received_at"] = Value::String(format!("{}{changed}Z", &at[..at.len() - 2]));
    })
    .await;
    assert_tamper_fails(&proof, dir.path(), "receipt signature", "receipt.signature_base64", |p| {
        flip_base64(&mut p["receipt"]["signature_base64"], -1)
    })
    .await;
    assert_tamper_fails(&proof, dir.path(), "receiver", "receipt.receiver", |p| {
        p["receipt"]["receiver"] = Value::String("DE".into());
    })
    .await;
    net.stop("VN").await;
    net.stop("FR").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_proof_is_for_whoever_may_read_the_message_and_names_bad_ids() {
    use hanoi247::domain::access::Role;
    let clients =
        [("VN", "duty", Role::Officer), ("VN", "police", Role::Agency), ("VN", "audit", Role::Auditor)];
    let mut net = Network::with_clients(&["VN", "FR"], &clients).await;
    net.start("VN").await;
    let (mut duty, mut police, mut audit) =
        (net.desk_as("VN", "duty"), net.desk_as("VN", "police"), net.desk_as("VN", "audit"));
    let of_police = submit(&mut police, preservation_request("FR")).await;
    let of_duty = submit(&mut duty, preservation_request("FR")).await;

    // Not delivered yet: the proof has the origin's part and no receipt.
    let own = police.get_proof(GetProofRequest { id: of_police.clone() }).await.unwrap().into_inner();
    assert!(own.receipt.is_none());
    assert!(!own.origin_signature.is_empty());
    duty.get_proof(GetProofRequest { id: of_police.clone() }).await.expect("an officer reads everything");
    let status = police.get_proof(GetProofRequest { id: of_duty.clone() }).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    let status = audit.get_proof(GetProofRequest { id: of_duty.clone() }).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");

    let status = duty.get_proof(GetProofRequest { id: "not-an-id".into() }).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().starts_with("id: "), "{}", status.message());
    let unknown = uuid::Uuid::now_v7().to_string();
    let status = duty.get_proof(GetProofRequest { id: unknown.clone() }).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    assert!(status.message().contains(&unknown), "{}", status.message());

    // Reading a proof is audited like a Get, and so is the refusal.
    let request = hanoi247::proto::ListAuditRequest { message_id: of_police.clone(), ..Default::default() };
    let mut stream = audit.list_audit(request).await.unwrap().into_inner();
    let mut records = Vec::new();
    while let Some(record) = tokio::time::timeout(DEADLINE, stream.next()).await.unwrap() {
        records.push(record.unwrap());
    }
    assert!(
        records
            .iter()
            .any(|r| r.who == "police (agency)" && r.action == "Get" && r.details.starts_with("proof")),
        "{records:?}"
    );
    let request = hanoi247::proto::ListAuditRequest { message_id: of_duty.clone(), ..Default::default() };
    let mut stream = audit.list_audit(request).await.unwrap().into_inner();
    let mut records = Vec::new();
    while let Some(record) = tokio::time::timeout(DEADLINE, stream.next()).await.unwrap() {
        records.push(record.unwrap());
    }
    assert!(
        records.iter().any(|r| r.who == "police (agency)" && r.details.starts_with("REFUSED")),
        "{records:?}"
    );

    // A proof without a receipt verifies the origin and says it proves nothing about delivery.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("undelivered.json");
    let proof = hanoi247::trust::proof::build(&own).unwrap();
    std::fs::write(&file, serde_json::to_string(&proof).unwrap()).unwrap();
    let (ok, stdout, stderr) = verify(&file, Some(&net.config("VN").tls.network_ca)).await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("receipt: none in this file; it proves nothing about delivery"), "{stdout}");
    net.stop("VN").await;
}
