//! Issue 16 (attachments): content uploaded in pieces and stored under its SHA-256 before the
//! digest is answered, listed by `Submit` and `Respond` by digest, downloaded by whoever may read
//! the message (an agency: only its own), limits refused by name with nothing kept, and the
//! content carried to the peer, which receipts the envelope only once the content is on its disk.

use hanoi247::cli::desk_client::{DeskClient, download_attachment, upload_attachment};
use hanoi247::domain::access::Role;
use std::time::Duration;

use hanoi247::proto::delivery_result::Outcome;
use hanoi247::proto::{
    Attachment, DeliverRequest, EnvelopeKind, GetRequest, MessageState, Precedence, PutAttachmentRequest,
    RespondRequest, SubmitRequest,
};

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

/// A piece of content for `PutAttachment`.
fn piece(content: &[u8], offset: usize, len: usize) -> PutAttachmentRequest {
    let data = content[offset..offset + len].to_vec();
    PutAttachmentRequest {
        sha256: sha256(content),
        size_bytes: content.len() as u64,
        offset: offset as u64,
        piece_sha256: sha256(&data),
        data,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_content_travels_before_its_envelope_and_both_ends_serve_the_same_digest() {
    let clients = [("VN", "police", Role::Agency), ("FR", "duty", Role::Officer)];
    let mut net = Network::with_clients(&["VN", "FR"], &clients).await;
    net.start("VN").await;
    net.start("FR").await;
    let (mut police, mut fr) = (net.desk_as("VN", "police"), net.desk_as("FR", "duty"));

    let evidence = content(3 * 1024 * 1024 + 17, 9);
    let uploaded = upload(&mut police, "subscriber.csv", &evidence).await;
    let id = submit(&mut police, with_attachments("FR", vec![uploaded.clone()])).await;
    wait_state(&mut police, &id, MessageState::Delivered).await;
    // FR receipted it: the content is on its disk, and it serves the digest VN sent.
    assert_eq!(download_attachment(&mut fr, &id, &uploaded.sha256).await.unwrap(), evidence);

    // The answer carries evidence back, to the agency that asked.
    let answer = upload(&mut fr, "records.txt", b"the subscriber's records").await;
    fr.respond(RespondRequest {
        id: id.clone(),
        text: "attached".into(),
        attachments: vec![answer.clone()],
        ..Default::default()
    })
    .await
    .unwrap();
    let response = {
        let mut found = None;
        eventually("the response at VN", async || {
            let got = police.get(GetRequest { id: id.clone() }).await.unwrap().into_inner();
            found = got
                .replies
                .into_iter()
                .find(|r| r.envelope.as_ref().is_some_and(|e| e.kind() == EnvelopeKind::Response));
            found.is_some()
        })
        .await;
        found.unwrap()
    };
    let response_id = response.envelope.as_ref().unwrap().id.clone();
    assert_eq!(response.envelope.unwrap().attachments, std::slice::from_ref(&answer));
    assert_eq!(
        download_attachment(&mut police, &response_id, &answer.sha256).await.unwrap(),
        b"the subscriber's records"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_piece_is_refused_and_content_with_a_wrong_digest_never_gets_a_receipt() {
    let mut net = Network::new(&["VN", "FR"]).await;
    net.start("FR").await;
    let mut peer = net.peer_client("VN", "FR");
    let fr_dir = net.config("FR").data_dir;
    let evidence = content(300_000, 5);

    // The first piece goes in; a tampered second piece is refused and nothing of it kept.
    let answer = peer.put_attachment(tokio_stream::iter([piece(&evidence, 0, 100_000)])).await.unwrap();
    assert_eq!((answer.get_ref().offset, answer.get_ref().complete), (100_000, false));
    let mut tampered = piece(&evidence, 100_000, 100_000);
    tampered.data[7] ^= 1;
    let status = peer.put_attachment(tokio_stream::iter([tampered])).await.unwrap_err();
    assert_names(&status, tonic::Code::InvalidArgument, "piece_sha256");
    // Sent again as it is: taken, from where FR stands.
    let probe = PutAttachmentRequest { data: Vec::new(), piece_sha256: Vec::new(), ..piece(&evidence, 0, 0) };
    let answer = peer.put_attachment(tokio_stream::iter([probe])).await.unwrap().into_inner();
    assert_eq!(answer.offset, 100_000, "the tampered piece left nothing");
    let rest = [piece(&evidence, 100_000, 100_000), piece(&evidence, 200_000, 100_000)];
    let answer = peer.put_attachment(tokio_stream::iter(rest)).await.unwrap().into_inner();
    assert!(answer.complete);
    assert_eq!(
        std::fs::read(fr_dir.join("attachments").join(hex::encode(sha256(&evidence)))).unwrap(),
        evidence
    );

    // Content that does not have the digest it is sent under is discarded whole...
    let claimed = sha256(b"what the envelope says");
    let mut lying = piece(&evidence, 0, 1000);
    lying.sha256 = claimed.clone();
    lying.size_bytes = 1000;
    let status = peer.put_attachment(tokio_stream::iter([lying])).await.unwrap_err();
    assert_names(&status, tonic::Code::InvalidArgument, "sha256");
    assert!(!fr_dir.join("attachments").join(hex::encode(&claimed)).exists());
    assert!(
        std::fs::read_dir(fr_dir.join("attachments").join("incoming")).unwrap().next().is_none(),
        "nothing partial kept"
    );

    // ...and an envelope listing it gets no receipt: refused by field, nothing stored.
    let listed = Attachment {
        name: "a.bin".into(),
        media_type: "application/octet-stream".into(),
        size_bytes: 1000,
        sha256: claimed,
    };
    let envelope = signed_request(&net, "VN", "FR", |e| e.attachments.push(listed.clone()));
    let results = peer
        .deliver(DeliverRequest { envelopes: vec![envelope], ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .results;
    match &results[0].outcome {
        Some(Outcome::Refusal(refusal)) => {
            assert!(refusal.message.starts_with("attachments[0].sha256:"), "{}", refusal.message)
        }
        other => panic!("a receipt without the content: {other:?}"),
    }
    assert!(inbox(&mut net.desk("FR")).await.is_empty(), "nothing stored");
}

/// Runs the `hanoi247` binary (off the async workers); its success, stdout and stderr.
async fn cli(args: Vec<String>) -> (bool, String, String) {
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_hanoi247")).args(&args).output().unwrap()
    })
    .await
    .unwrap();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (output.status.success(), text(&output.stdout), text(&output.stderr))
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|a| (*a).to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_attaches_files_to_send_and_respond_and_saves_them_with_their_digests_checked() {
    let mut net = Network::new(&["VN", "FR"]).await;
    net.start("VN").await;
    net.start("FR").await;
    let files = net.dir().join("files");
    std::fs::create_dir_all(&files).unwrap();
    let csv = content(700_000, 1);
    std::fs::write(files.join("logs.csv"), &csv).unwrap();
    std::fs::write(files.join("note.txt"), b"see the logs").unwrap();
    std::fs::write(files.join("answer.bin"), content(1000, 2)).unwrap();
    let (vn_config, fr_config) = (net.client_config_path("VN"), net.client_config_path("FR"));
    let path = |p: &std::path::Path| p.to_str().unwrap().to_owned();

    let mut send = args(&["send", "--to", "FR", "--type", "technical-advice", "--precedence", "routine"]);
    send.extend(args(&["--subject", "with files", "--config"]));
    send.push(path(&vn_config));
    send.extend([
        "--attach".into(),
        path(&files.join("logs.csv")),
        "--attach".into(),
        path(&files.join("note.txt")),
    ]);
    let (ok, stdout, stderr) = cli(send).await;
    assert!(ok, "send failed: {stderr}");
    let id = stdout.split_whitespace().next().unwrap().to_owned();
    let mut fr = net.desk("FR");
    let received = wait_state(&mut fr, &id, MessageState::Received).await;
    let listed: Vec<_> = received
        .envelope
        .unwrap()
        .attachments
        .iter()
        .map(|a| (a.name.clone(), a.media_type.clone()))
        .collect();
    assert_eq!(
        listed,
        [("logs.csv".to_owned(), "text/csv".to_owned()), ("note.txt".to_owned(), "text/plain".to_owned())]
    );

    let (ok, shown, stderr) = cli(vec!["show".into(), id.clone(), "--config".into(), path(&vn_config)]).await;
    assert!(ok, "{stderr}");
    assert!(shown.contains("  attachments\n    logs.csv  text/csv  700000 bytes  sha256 "), "{shown}");

    let mut respond = args(&["respond", &id, "--text", "answered", "--config"]);
    respond.push(path(&fr_config));
    respond.extend(["--attach".into(), path(&files.join("answer.bin"))]);
    let (ok, _, stderr) = cli(respond).await;
    assert!(ok, "respond failed: {stderr}");
    let mut vn = net.desk("VN");
    wait_state(&mut vn, &id, MessageState::Answered).await;
    let saved = net.dir().join("saved");
    eventually("the response's attachment at VN", async || {
        let mut show = args(&["show", &id, "--config"]);
        show.push(path(&vn_config));
        show.extend(["--save-attachments".into(), path(&saved)]);
        let (ok, _, _) = cli(show).await;
        ok && saved.join("answer.bin").exists()
    })
    .await;
    assert_eq!(std::fs::read(saved.join("logs.csv")).unwrap(), csv);
    assert_eq!(std::fs::read(saved.join("note.txt")).unwrap(), b"see the logs");
    assert_eq!(std::fs::read(saved.join("answer.bin")).unwrap(), content(1000, 2));
    let mut names: Vec<_> = std::fs::read_dir(&saved).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    assert_eq!(names, ["answer.bin", "logs.csv", "note.txt"], "saved again: the same names");

    // A file that cannot be read: refused before anything is sent.
    let before = outbox(&mut vn).await.len();
    let mut missing = args(&["send", "--to", "FR", "--type", "technical-advice", "--precedence", "routine"]);
    missing.extend(args(&["--subject", "no file", "--config"]));
    missing.push(path(&vn_config));
    missing.extend(["--attach".into(), path(&files.join("nowhere.pdf"))]);
    let (ok, _, stderr) = cli(missing).await;
    assert!(!ok && stderr.contains("nowhere.pdf"), "{stderr}");
    assert_eq!(outbox(&mut vn).await.len(), before, "nothing sent");
}

/// Acceptance 1 of issue 16: 40 MiB from VN to FR through a connection cut every 7 MiB, FR
/// killed with SIGKILL once mid-transfer. The transfer resumes from what FR's disk holds each
/// time; FR's receipt arrives, the file FR serves has the digest VN sent, and the proof verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_mib_arrive_through_cuts_and_a_sigkill_and_the_proof_verifies() {
    use crate::support::proxy::{Fault, Flow, Proxy};
    let net = Network::new(&["VN", "FR"]).await;
    let fr_peer = std::net::SocketAddr::from(([127, 0, 0, 1], net.config("FR").listen.peer.port()));
    let proxy =
        Proxy::with_fault(fr_peer, Fault::CutAfter { bytes: 7 << 20, direction: Flow::ClientToServer }).await;
    net.route_peer("VN", "FR", &format!("127.0.0.1:{}", proxy.port()));
    let fr_process = net.spawn("FR").await;
    let _vn_process = net.spawn("VN").await;
    let mut vn = net.desk("VN");

    let evidence = content(40 << 20, 3);
    let uploaded = upload(&mut vn, "disk-image.bin", &evidence).await;
    let id = submit(&mut vn, with_attachments("FR", vec![uploaded.clone()])).await;

    // FR is killed once it holds part of the content, and comes back on the same ports.
    let partial = net
        .config("FR")
        .data_dir
        .join("attachments")
        .join("incoming")
        .join(format!("{}.partial", hex::encode(&uploaded.sha256)));
    eventually("FR holding part of the content", async || {
        std::fs::metadata(&partial).is_ok_and(|m| m.len() >= 4 << 20)
    })
    .await;
    fr_process.kill9();
    let held_at_kill = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
    let _fr_process = net.spawn("FR").await;

    // Long enough for 40 MiB in a debug build through the cuts and the restart.
    let deadline = tokio::time::Instant::now() + 4 * DEADLINE;
    loop {
        let got = vn.get(GetRequest { id: id.clone() }).await.unwrap().into_inner().message.unwrap();
        if got.state() == MessageState::Delivered {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not delivered: {:?} {}",
            got.state(),
            got.last_error
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("FR held {held_at_kill} bytes when killed; proxy: {}", proxy.stats().summary());
    let cuts = proxy.stats().cut_after_bytes.load(std::sync::atomic::Ordering::Relaxed);
    assert!(cuts >= 3, "the connection was cut several times: {}", proxy.stats().summary());
    assert!(held_at_kill > 0, "FR kept what it had synced across the SIGKILL");
    let up = proxy.stats().bytes_up.load(std::sync::atomic::Ordering::Relaxed);
    assert!(up < 2 * (40 << 20), "resumed, not sent again from the start each time: {up} bytes up");

    // FR serves the digest VN sent.
    let served = download_attachment(&mut net.desk("FR"), &id, &uploaded.sha256).await.unwrap();
    assert_eq!(sha256(&served), uploaded.sha256);

    // The proof of origin and receipt (which covers the digest) verifies offline.
    let proof = net.dir().join("proof.json");
    let vn_config = net.client_config_path("VN");
    let show =
        args(&["show", &id, "--proof", proof.to_str().unwrap(), "--config", vn_config.to_str().unwrap()]);
    let (ok, _, stderr) = cli(show).await;
    assert!(ok, "show --proof: {stderr}");
    let (ok, stdout, stderr) = cli(args(&["verify", proof.to_str().unwrap()])).await;
    assert!(ok, "verify: {stdout} {stderr}");
    let text = std::fs::read_to_string(&proof).unwrap();
    assert!(text.contains(&hex::encode(&uploaded.sha256)), "the proof shows the attachment's digest");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_links_each_attachment_to_a_download_for_who_may_read_the_message() {
    use crate::console::{browser, console_port, fetch};
    let clients =
        [("VN", "police", Role::Agency), ("VN", "cert", Role::Agency), ("VN", "duty", Role::Officer)];
    let mut net = Network::with_clients(&["VN", "FR"], &clients).await;
    net.start("VN").await;
    let mut police = net.desk_as("VN", "police");
    let text = b"subscriber,ip\nalice,192.0.2.1\n";
    let uploaded = upload_attachment(&mut police, "subscriber.csv", "text/csv", text.to_vec()).await.unwrap();
    let id = submit(&mut police, with_attachments("FR", vec![uploaded.clone()])).await;
    let port = console_port(&net, "VN");
    let link = format!("/message/{id}/attachment/{}", hex::encode(&uploaded.sha256));

    let own = browser(&net, "VN", "police");
    let page = fetch(std::sync::Arc::clone(&own), port, &format!("/message/{id}"), None).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains(&format!("href=\"{link}\"")), "{}", page.body);
    let download = fetch(own, port, &link, None).await;
    assert_eq!(download.status, 200);
    assert_eq!(download.body.as_bytes(), text);
    let disposition = download.header("content-disposition");
    assert!(disposition.is_some_and(|v| v.starts_with("attachment")), "never shown inline");
    assert_eq!(download.header("x-content-type-options"), Some("nosniff"));

    let other = fetch(browser(&net, "VN", "cert"), port, &link, None).await;
    assert_eq!(other.status, 403, "another agency's request");
    let officer = fetch(browser(&net, "VN", "duty"), port, &link, None).await;
    assert_eq!((officer.status, officer.body.as_bytes()), (200, text.as_slice()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attachments_are_refused_for_an_older_peer_and_an_answer_listing_unknown_content_changes_nothing() {
    use tonic_types::StatusExt as _;
    let mut net = Network::new(&["VN", "FR"]).await;
    net.start("VN").await;
    // FR as an older version says Hello: no `envelope_fields`, so no attachments' content.
    let older = hanoi247::proto::HelloRequest {
        node: "FR".into(),
        software_version: "hanoi247 0.0.9".into(),
        ..Default::default()
    };
    net.peer_client("FR", "VN").hello(older).await.unwrap();
    let mut vn = net.desk("VN");
    let uploaded = upload(&mut vn, "a.bin", b"for a peer that cannot take it").await;
    let status = vn.submit(with_attachments("FR", vec![uploaded])).await.unwrap_err();
    assert_names(&status, tonic::Code::FailedPrecondition, "attachments");
    assert_eq!(status.get_details_error_info().unwrap().reason, "PEER_CANNOT_READ");
    assert!(outbox(&mut vn).await.is_empty(), "nothing stored");

    // An answer listing content nobody uploaded: refused by field, the request not answered.
    net.start("FR").await;
    let mut fr = net.desk("FR");
    let mut vn_to_fr = net.desk("VN");
    let id = submit(&mut vn_to_fr, advice_request("FR", Precedence::Routine, "asks")).await;
    wait_state(&mut fr, &id, MessageState::Received).await;
    let unknown = Attachment {
        name: "x.bin".into(),
        media_type: "application/octet-stream".into(),
        size_bytes: 0,
        sha256: sha256(b"never uploaded at FR"),
    };
    let answer = RespondRequest {
        id: id.clone(),
        text: "see attached".into(),
        attachments: vec![unknown],
        ..Default::default()
    };
    let status = fr.respond(answer).await.unwrap_err();
    assert_names(&status, tonic::Code::InvalidArgument, "attachments[0].sha256");
    let still = fr.get(GetRequest { id: id.clone() }).await.unwrap().into_inner();
    assert_eq!(still.message.unwrap().state(), MessageState::Received, "nothing answered");
    assert!(still.replies.is_empty(), "nothing queued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_without_pieces_or_cut_off_midway_keeps_nothing() {
    use hanoi247::proto::UploadAttachmentRequest;
    let mut net = Network::new(&["VN", "FR"]).await;
    // A call may take this long (limits.request_timeout), an upload too.
    limits(&net, "VN", "request_timeout = \"1s\"\n");
    net.start("VN").await;
    let mut vn = net.desk("VN");
    let status =
        vn.upload_attachment(tokio_stream::iter(Vec::<UploadAttachmentRequest>::new())).await.unwrap_err();
    assert_names(&status, tonic::Code::InvalidArgument, "name");

    // A client that stops sending after two pieces (its stream neither ends nor goes on): the
    // node gives up at limits.request_timeout and drops what it wrote.
    let (pieces, receiver) = tokio::sync::mpsc::channel(4);
    let mut client = net.desk("VN");
    let call = tokio::spawn(async move {
        client.upload_attachment(tokio_stream::wrappers::ReceiverStream::new(receiver)).await
    });
    for i in 0..2 {
        let first = i == 0;
        let piece = UploadAttachmentRequest {
            name: if first { "cut.bin".into() } else { String::new() },
            media_type: String::new(),
            data: content(100_000, i),
        };
        pieces.send(piece).await.unwrap();
    }
    eventually("the upload under way", async || !attachment_files(&net, "VN").is_empty()).await;
    let status = call.await.unwrap().unwrap_err();
    assert_eq!(status.code(), tonic::Code::Cancelled, "{status:?}");
    eventually("nothing kept of the cut upload", async || attachment_files(&net, "VN").is_empty()).await;
    drop(pieces);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_form_sends_its_files_as_attachments() {
    use crate::console::{browser, console_port, fetch, post_multipart};
    let mut net = Network::new(&["VN", "FR"]).await;
    net.start("VN").await;
    let port = console_port(&net, "VN");
    let officer = browser(&net, "VN", "officer");
    let form = fetch(std::sync::Arc::clone(&officer), port, "/new", None).await;
    assert!(form.body.contains("enctype=\"multipart/form-data\""), "{}", form.body);
    assert!(form.body.contains("type=\"file\""), "{}", form.body);
    let token = form.token();

    let evidence = content(300_000, 4);
    let boundary = "----hanoi247test";
    let mut body = Vec::new();
    let mut field = |name: &str, value: &str| {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                .as_bytes(),
        );
    };
    field("csrf", &token);
    field("destination", "FR");
    field("request_type", "REQUEST_TYPE_TECHNICAL_ADVICE");
    field("precedence", "PRECEDENCE_ROUTINE");
    field("subject", "logs attached");
    field("handling_code", "HANDLING_CODE_H0");
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"attachments\"; filename=\"logs.bin\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(&evidence);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let sent = post_multipart(std::sync::Arc::clone(&officer), port, "/new", boundary, &body).await;
    assert_eq!(sent.status, 303, "{}", sent.body);
    let id = sent.header("location").unwrap().trim_start_matches("/message/").to_owned();

    let mut vn = net.desk("VN");
    let stored = vn.get(GetRequest { id: id.clone() }).await.unwrap().into_inner().message.unwrap();
    let listed = stored.envelope.unwrap().attachments;
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].name.as_str(), listed[0].size_bytes), ("logs.bin", 300_000));
    assert_eq!(download_attachment(&mut vn, &id, &listed[0].sha256).await.unwrap(), evidence);
}
