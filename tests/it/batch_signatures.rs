//! Signatures amortised over batches (issue 13): the envelopes of concurrent `Submit`s are signed
//! once per group, the receipts of a `Deliver` batch once per batch, and each message keeps its
//! inclusion path. The proof file of such a message (format v2) verifies offline and each
//! tampering is named by part; a proof file written by the release before batch signatures
//! (format v1) still verifies.

use std::path::Path;

use hanoi247::proto::{GetProofRequest, GetRequest, MessageState, Precedence};
use serde_json::Value;

use crate::signing::{assert_tamper_fails, flip_base64, show_proof, verify};
use crate::support::*;

/// How many `Submit`s go at once in one round, and how many rounds at most until the node has
/// signed some of them as a group (each round is a handful of concurrent calls: bounded).
const AT_ONCE: usize = 24;
const ROUNDS: usize = 8;

/// Submits `AT_ONCE` requests to FR at once from VN's desk; returns their ids.
async fn submit_at_once(desk: &hanoi247::cli::desk_client::DeskClient, round: usize) -> Vec<String> {
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..AT_ONCE {
        let mut desk = desk.clone();
        let request = advice_request("FR", Precedence::Routine, &format!("request {round}.{i}"));
        calls.spawn(async move { submit(&mut desk, request).await });
    }
    calls.join_all().await
}

/// Flips the last hex digit of a hash string.
fn flip_hex(value: &mut Value) {
    let mut text = value.as_str().unwrap().to_owned();
    let last = text.pop().unwrap();
    text.push(if last == '0' { '1' } else { '0' });
    *value = Value::String(text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_signed_message_has_a_proof_that_verifies_offline_and_names_each_tampering() {
    let mut net = Network::new(&["VN", "FR"]).await;
    net.start("FR").await;
    net.start("VN").await;
    let vn = net.desk("VN");
    // FR says in Hello that it verifies batch signatures: then VN signs in groups.
    let first = submit(&mut vn.clone(), preservation_request("FR")).await;
    wait_state(&mut vn.clone(), &first, MessageState::Delivered).await;
    // FR down: the requests wait in VN's outbox and go in batches once it is back.
    net.stop("FR").await;
    let mut grouped = None;
    let mut all = Vec::new();
    for round in 0..ROUNDS {
        let ids = submit_at_once(&vn, round).await;
        for id in &ids {
            let message = vn.clone().get(GetRequest { id: id.clone() }).await.unwrap().into_inner();
            let envelope = message.message.unwrap().envelope.unwrap();
            if envelope.origin_batch.as_ref().is_some_and(|b| b.tree_size > 1) && grouped.is_none() {
                grouped = Some(id.clone());
            }
        }
        all.extend(ids);
        if grouped.is_some() {
            break;
        }
    }
    let id = grouped.expect("some concurrent Submits were signed as a group");
    net.start("FR").await;
    for id in &all {
        wait_state(&mut vn.clone(), id, MessageState::Delivered).await;
    }
    let proof = vn.clone().get_proof(GetProofRequest { id: id.clone() }).await.unwrap().into_inner();
    let origin_batch = proof.origin_batch.clone().expect("the proof carries the inclusion path");
    assert_eq!(origin_batch.format, 2);
    let receipt = proof.receipt.clone().expect("delivered");
    assert!(
        receipt.receipt_batch.is_some(),
        "the backlog went in batches: its receipts are signed per batch"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("proof.json");
    show_proof(&net, "VN", &id, &file).await;
    let network_ca = net.config("VN").tls.network_ca;
    let (ok, stdout, stderr) = verify(&file, Some(&network_ca)).await;
    assert!(ok, "verify failed: {stderr}");
    assert!(stdout.starts_with(&format!("VERIFIED: proof of envelope {id}")), "{stdout}");
    assert!(stdout.contains("acknowledged durable receipt"), "{stdout}");
    assert!(stdout.contains("signed once for a batch of"), "{stdout}");

    let proof: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(proof["format"], "hanoi247-proof-v2");
    assert!(proof["origin"]["batch"]["tree_size"].as_u64().unwrap() > 1, "{proof}");
    assert!(proof["receipt"]["batch"]["tree_size"].as_u64().unwrap() > 1, "{proof}");
    let dir = dir.path();
    // The envelope: one changed byte, the digest fixed to match: the leaf is not this envelope's.
    let canonical = base64_decode(proof["envelope"]["canonical_base64"].as_str().unwrap());
    let subject_at = canonical.windows(7).position(|w| w == b"request").unwrap() as isize;
    assert_tamper_fails(&proof, dir, "batch envelope byte", "origin.batch.leaf", |p| {
        flip_base64(&mut p["envelope"]["canonical_base64"], subject_at);
        let bytes = base64_decode(p["envelope"]["canonical_base64"].as_str().unwrap());
        p["envelope"]["sha256"] =
            Value::String(hanoi247::trust::signing::hex(&hanoi247::trust::signing::sha256(&bytes)));
        p["envelope"]["readable"] = serde_json::json!({});
    })
    .await;
    for part in ["origin", "receipt"] {
        assert_tamper_fails(&proof, dir, &format!("{part} leaf"), &format!("{part}.batch.leaf"), |p| {
            flip_hex(&mut p[part]["batch"]["leaf"])
        })
        .await;
        assert_tamper_fails(
            &proof,
            dir,
            &format!("{part} path step"),
            &format!("{part}.batch.audit_path"),
            |p| flip_hex(&mut p[part]["batch"]["audit_path"][0]),
        )
        .await;
        assert_tamper_fails(&proof, dir, &format!("{part} root"), &format!("{part}.batch.root"), |p| {
            flip_hex(&mut p[part]["batch"]["root"])
        })
        .await;
        assert_tamper_fails(
            &proof,
            dir,
            &format!("{part} signature"),
            &format!("{part}.signature_base64"),
            |p| flip_base64(&mut p[part]["signature_base64"], -1),
        )
        .await;
        // Another member's certificate: the chain does not name the signer.
        let other = if part == "origin" { "receipt" } else { "origin" };
        assert_tamper_fails(
            &proof,
            dir,
            &format!("{part} certificate"),
            &format!("{part}.certificate_chain"),
            |p| p[part]["certificate_chain"][0] = p[other]["certificate_chain"][0].clone(),
        )
        .await;
    }
    net.stop("VN").await;
    net.stop("FR").await;
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(text).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proof_file_of_the_release_before_batch_signatures_still_verifies() {
    // Written by `show --proof` of the release before this one (format v1, single signatures).
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let file = fixtures.join("proof-v1.json");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("\"format\": \"hanoi247-proof-v1\""), "the fixture is a v1 file");
    let (ok, stdout, stderr) = verify(&file, Some(&fixtures.join("proof-v1-ca.pem"))).await;
    assert!(ok, "a v1 proof no longer verifies: {stderr}");
    assert!(stdout.starts_with("VERIFIED: proof of envelope"), "{stdout}");
    assert!(stdout.contains("given with --ca"), "{stdout}");
    // Tampering is still named in v1 files, and a v1 file cannot carry batch parts.
    let mut proof: Value = serde_json::from_str(&text).unwrap();
    let dir = tempfile::tempdir().unwrap();
    assert_tamper_fails(&proof, dir.path(), "v1 signature", "origin.signature_base64", |p| {
        flip_base64(&mut p["origin"]["signature_base64"], -1)
    })
    .await;
    proof["origin"]["batch"] = serde_json::json!({
        "leaf": "00", "leaf_index": 0, "tree_size": 1, "audit_path": [], "root": "00"
    });
    let path = dir.path().join("v1-with-batch.json");
    std::fs::write(&path, proof.to_string()).unwrap();
    let (ok, _, stderr) = verify(&path, None).await;
    assert!(!ok && stderr.contains("format: "), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_peer_gets_single_signatures_and_a_newer_one_batch_receipts() {
    let mut net = Network::new(&["VN", "FR"]).await;
    // Made while FR is down, so VN has not heard FR's Hello: each envelope signed alone.
    net.start("VN").await;
    let mut vn = net.desk("VN");
    let mut envelopes = Vec::new();
    for i in 0..4 {
        let id = submit(&mut vn, advice_request("FR", Precedence::Routine, &format!("request {i}"))).await;
        let message = vn.get(GetRequest { id }).await.unwrap().into_inner().message.unwrap();
        envelopes.push(message.envelope.unwrap());
    }
    net.stop("VN").await;
    assert!(envelopes.iter().all(|e| e.origin_batch.is_none()), "no batch signatures before a Hello says so");
    net.start("FR").await;
    let mut as_vn = net.peer_client("VN", "FR");
    let hello = as_vn
        .hello(hanoi247::proto::HelloRequest { node: "VN".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert!(hello.verifies_batch_signatures, "FR says it verifies batch signatures");

    let fr_identity = hanoi247::domain::identity::Identity::Node {
        network: net.config("FR").network.clone(),
        code: code("FR"),
    };
    let ca = {
        use rustls::pki_types::pem::PemObject as _;
        let pem = std::fs::read(net.config("VN").tls.network_ca).unwrap();
        rustls::pki_types::CertificateDer::from_pem_slice(&pem).unwrap().to_vec()
    };
    // An older sender (it does not ask for batch receipts) gets one signature per receipt; a
    // newer one a signature per batch. Both verify, each receipt for its own envelope.
    let session = uuid::Uuid::now_v7().to_string();
    for (number, accepts_batch_receipts) in [(1u64, false), (2, true)] {
        let members = &envelopes[(number as usize - 1) * 2..number as usize * 2];
        let request = hanoi247::proto::DeliverRequest {
            envelopes: members.to_vec(),
            sender_session: session.clone(),
            batch_number: number,
            answered_through: 0,
            accepts_batch_receipts,
        };
        let response = as_vn.deliver(request).await.unwrap().into_inner();
        for (result, envelope) in response.results.iter().zip(members) {
            let Some(hanoi247::proto::delivery_result::Outcome::Receipt(receipt)) = &result.outcome else {
                panic!("not receipted: {result:?}");
            };
            assert_eq!(receipt.receipt_batch.is_some(), accepts_batch_receipts, "{receipt:?}");
            hanoi247::trust::signing::verify_receipt(receipt, envelope, &fr_identity, &ca).unwrap();
        }
    }
    net.stop("FR").await;
}
