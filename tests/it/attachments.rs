//! Issue 16 (attachments): content uploaded in pieces and stored under its SHA-256 before the
//! digest is answered, listed by `Submit` and `Respond` by digest, downloaded by whoever may read
//! the message (an agency: only its own), limits refused by name with nothing kept, and the
//! content carried to the peer, which receipts the envelope only once the content is on its disk.

use hanoi247::cli::desk_client::{DeskClient, download_attachment, upload_attachment};
use hanoi247::domain::access::Role;
use hanoi247::proto::{Attachment, GetRequest, Precedence, SubmitRequest};

use crate::support::*;

/// SHA-256 of `content`.
fn sha256(content: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, content).as_ref().to_vec()
}

/// `size` bytes that are not all alike.
fn content(size: usize, seed: u8) -> Vec<u8> {
    (0..size).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

/// The files in a node's attachment directory (temp files included), sorted.
fn attachment_files(net: &Network, node: &str) -> Vec<String> {
    let dir = net.config(node).data_dir.join("attachments");
    let Ok(entries) = std::fs::read_dir(&dir) else { return Vec::new() };
    let mut names: Vec<String> = entries
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name != "incoming")
        .collect();
    names.sort();
    names
}

/// A request to `destination` listing `attachments`.
fn with_attachments(destination: &str, attachments: Vec<Attachment>) -> SubmitRequest {
    SubmitRequest { attachments, ..advice_request(destination, Precedence::Priority, "with evidence") }
}

fn assert_names(status: &tonic::Status, code: tonic::Code, field: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    assert!(status.message().starts_with(&format!("{field}:")), "should name {field}: {}", status.message());
}

async fn upload(desk: &mut DeskClient, name: &str, content: &[u8]) -> Attachment {
    upload_attachment(desk, name, "application/octet-stream", content.to_vec()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_is_stored_under_its_digest_listed_by_submit_and_downloaded_by_who_may_read_it() {
    let clients = [
        ("VN", "duty", Role::Officer),
        ("VN", "ops", Role::Operator),
        ("VN", "police", Role::Agency),
        ("VN", "cert", Role::Agency),
        ("VN", "audit", Role::Auditor),
    ];
    let mut net = Network::with_clients(&["VN", "FR"], &clients).await;
    net.start("VN").await;
    let (mut police, mut cert, mut ops, mut audit, mut duty) = (
        net.desk_as("VN", "police"),
        net.desk_as("VN", "cert"),
        net.desk_as("VN", "ops"),
        net.desk_as("VN", "audit"),
        net.desk_as("VN", "duty"),
    );

    // A file of several pieces: answered with its digest and size, on disk under the digest.
    let evidence = content(1_000_000, 7);
    let uploaded = upload_attachment(&mut police, "logs.csv", "text/csv", evidence.clone()).await.unwrap();
    assert_eq!(uploaded.sha256, sha256(&evidence));
    assert_eq!(
        (uploaded.size_bytes, uploaded.name.as_str(), uploaded.media_type.as_str()),
        (1_000_000, "logs.csv", "text/csv")
    );
    let on_disk = net.config("VN").data_dir.join("attachments").join(hex::encode(&uploaded.sha256));
    assert_eq!(std::fs::read(&on_disk).unwrap(), evidence);
    // The same content again is stored once.
    let again = upload(&mut duty, "copy.csv", &evidence).await;
    assert_eq!(again.sha256, uploaded.sha256);
    assert_eq!(attachment_files(&net, "VN"), [hex::encode(&uploaded.sha256)]);

    // Submit lists it by digest; the size comes from the content.
    let listed = Attachment { size_bytes: 0, ..uploaded.clone() };
    let id = submit(&mut police, with_attachments("FR", vec![listed])).await;
    let stored = police.get(GetRequest { id: id.clone() }).await.unwrap().into_inner().message.unwrap();
    assert_eq!(stored.envelope.unwrap().attachments, std::slice::from_ref(&uploaded));

    // Whoever may read the message downloads the content; nobody else.
    assert_eq!(download_attachment(&mut police, &id, &uploaded.sha256).await.unwrap(), evidence);
    assert_eq!(download_attachment(&mut ops, &id, &uploaded.sha256).await.unwrap(), evidence);
    assert_eq!(download_attachment(&mut duty, &id, &uploaded.sha256).await.unwrap(), evidence);
    let status = download_attachment(&mut cert, &id, &uploaded.sha256).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "another agency's request: {status:?}");
    let status = download_attachment(&mut audit, &id, &uploaded.sha256).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "the auditor reads no content: {status:?}");
    let status = upload_attachment(&mut ops, "x", "text/plain", b"x".to_vec()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "operators do not send: {status:?}");
    let status = download_attachment(&mut police, &id, &sha256(b"other")).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound, "a digest the message does not list: {status:?}");
    let status = download_attachment(&mut police, &id, b"short").await.unwrap_err();
    assert_names(&status, tonic::Code::InvalidArgument, "sha256");

    // A digest nobody uploaded, or a size that is not the content's: refused by field, nothing stored.
    let before = outbox(&mut duty).await.len();
    let unknown = Attachment { sha256: sha256(b"never uploaded"), ..uploaded.clone() };
    let status = duty.submit(with_attachments("FR", vec![unknown])).await.unwrap_err();
    assert_names(&status, tonic::Code::InvalidArgument, "attachments[0].sha256");
    let wrong_size = Attachment { size_bytes: 5, ..uploaded.clone() };
    let status = duty.submit(with_attachments("FR", vec![wrong_size])).await.unwrap_err();
    assert_names(&status, tonic::Code::InvalidArgument, "attachments[0].size_bytes");
    let status = upload_attachment(&mut duty, "", "text/plain", b"x".to_vec()).await.unwrap_err();
    assert_names(&status, tonic::Code::InvalidArgument, "name");
    assert_eq!(outbox(&mut duty).await.len(), before, "nothing stored");
    assert_eq!(attachment_files(&net, "VN"), [hex::encode(&uploaded.sha256)], "nothing kept");
}

/// Adds `[limits]` to a node's config.
fn limits(net: &Network, node: &str, limits: &str) {
    net.edit_config(node, "[deadlines]\n", &format!("[limits]\n{limits}\n[deadlines]\n"));
}

fn assert_over_limit(status: &tonic::Status, field: &str, key: &str) {
    assert_names(status, tonic::Code::ResourceExhausted, field);
    assert!(
        status.message().contains(&format!("(limits.{key})")),
        "should name limits.{key}: {}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_too_many_attachments_are_refused_naming_the_limit_and_nothing_is_kept() {
    let mut net = Network::new(&["VN", "FR"]).await;
    limits(
        &net,
        "VN",
        "max_attachment_bytes = 300000\nmax_attachments = 2\nmax_envelope_attachment_bytes = 500000\n",
    );
    net.start("VN").await;
    let mut vn = net.desk("VN");

    // One byte over, in the second piece: refused, and no file (not even a temp file) is left.
    let status = upload_attachment(&mut vn, "big.bin", "", content(300_001, 1)).await.unwrap_err();
    assert_over_limit(&status, "data", "max_attachment_bytes");
    assert!(attachment_files(&net, "VN").is_empty(), "nothing kept: {:?}", attachment_files(&net, "VN"));

    let (a, b, c) = (
        upload(&mut vn, "a.bin", &content(300_000, 2)).await,
        upload(&mut vn, "b.bin", &content(250_000, 3)).await,
        upload(&mut vn, "c.bin", &content(10, 4)).await,
    );
    let status = vn.submit(with_attachments("FR", vec![a.clone(), b.clone(), c.clone()])).await.unwrap_err();
    assert_over_limit(&status, "attachments", "max_attachments");
    let status = vn.submit(with_attachments("FR", vec![a.clone(), b.clone()])).await.unwrap_err();
    assert_over_limit(&status, "attachments", "max_envelope_attachment_bytes");
    assert!(outbox(&mut vn).await.is_empty(), "nothing stored");
    submit(&mut vn, with_attachments("FR", vec![a, c])).await;
}
