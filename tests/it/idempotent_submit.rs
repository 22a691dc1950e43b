//! Issue 16, idempotent `Submit`: a client request id makes a retried `Submit` store one message,
//! whatever happened between the attempts (a lost answer, the node killed between its store and
//! its answer, concurrent attempts); a different request under a used id is ALREADY_EXISTS with
//! nothing stored; a malformed id is INVALID_ARGUMENT naming the field; ids of different clients
//! never meet. `hanoi247 send` makes an id and retries by itself.

use std::io::Write as _;
use std::os::unix::process::ExitStatusExt as _;
use std::process::{Command, Stdio};

use hanoi247::cli::desk_client::{DeskClient, download_attachment, upload_attachment};
use hanoi247::domain::access::Role;
use hanoi247::proto::{ListAuditRequest, Message, MessageState, Precedence, SubmitRequest, SubmitResponse};
use tokio_stream::StreamExt as _;
use uuid::Uuid;

use crate::support::*;

/// A routine request to FR with this subject, under `request_id`.
fn request(subject: &str, request_id: &str) -> SubmitRequest {
    let mut request = advice_request("FR", Precedence::Routine, subject);
    request.client_request_id = request_id.into();
    request
}

async fn submit_answer(desk: &mut DeskClient, request: SubmitRequest) -> SubmitResponse {
    desk.submit(request).await.unwrap().into_inner()
}

fn id_of(response: &SubmitResponse) -> String {
    response.message.clone().unwrap().envelope.unwrap().id
}

/// The outbox messages with `subject`.
async fn outbox_with(desk: &mut DeskClient, subject: &str) -> Vec<Message> {
    outbox(desk).await.into_iter().filter(|m| m.envelope.as_ref().unwrap().subject == subject).collect()
}

/// How many messages the outbox lists.
async fn outbox_len(desk: &mut DeskClient) -> usize {
    outbox(desk).await.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_id_with_the_same_content_gets_the_message_already_stored() {
    let mut net = Network::new(&["VN", "FR"]).await;
    net.start("VN").await;
    let mut vn = net.desk("VN");
    let request_id = Uuid::now_v7().to_string();

    let first = submit_answer(&mut vn, request("once", &request_id)).await;
    assert!(!first.replayed, "the first call stores");
    assert_eq!(first.message.as_ref().unwrap().state(), MessageState::Queued);
    // The same UUID in another spelling (upper case, no hyphens) is the same id.
    let respelled = Uuid::parse_str(&request_id).unwrap().simple().to_string().to_uppercase();
    for again in [request_id.clone(), respelled] {
        let retry = submit_answer(&mut vn, request("once", &again)).await;
        assert!(retry.replayed, "a retry must say it replayed");
        assert_eq!(id_of(&retry), id_of(&first));
        let envelope = retry.message.unwrap().envelope.unwrap();
        assert_eq!(envelope, first.message.clone().unwrap().envelope.unwrap(), "the same envelope");
    }
    assert_eq!(outbox_with(&mut vn, "once").await.len(), 1);
    // Without an id, the same content is a new request each time (as before).
    let plain = advice_request("FR", Precedence::Routine, "twice");
    submit(&mut vn, plain.clone()).await;
    submit(&mut vn, plain).await;
    assert_eq!(outbox_with(&mut vn, "twice").await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_different_request_under_a_used_id_is_already_exists_and_nothing_is_stored() {
    let mut net = Network::new(&["VN", "FR"]).await;
    net.start("VN").await;
    let mut vn = net.desk("VN");
    let request_id = Uuid::now_v7().to_string();
    let first = submit_answer(&mut vn, request("first", &request_id)).await;
    let before = outbox(&mut vn).await;

    let mut other_body = request("first", &request_id);
    other_body.body = "changed".into();
    let mut other_precedence = request("first", &request_id);
    other_precedence.set_precedence(Precedence::Flash);
    for different in [request("second", &request_id), other_body, other_precedence] {
        let status = vn.submit(different).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::AlreadyExists, "{status:?}");
        assert!(status.message().contains("client_request_id"), "{status:?}");
        assert!(status.message().contains(&id_of(&first)), "names the earlier message: {status:?}");
    }
    // (Their states move on by themselves: VN keeps trying FR, which is down.)
    let after = outbox(&mut vn).await;
    assert_eq!(ids(&after), ids(&before), "no message stored");
    let envelopes = |messages: &[Message]| messages.iter().map(|m| m.envelope.clone()).collect::<Vec<_>>();
    assert_eq!(envelopes(&after), envelopes(&before), "no message changed");
    // The id still stands for the first request.
    let retry = submit_answer(&mut vn, request("first", &request_id)).await;
    assert!(retry.replayed);
    assert_eq!(id_of(&retry), id_of(&first));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_id_that_is_not_a_uuid_is_invalid_argument_naming_the_field() {
    let mut net = Network::new(&["VN", "FR"]).await;
    net.start("VN").await;
    let mut vn = net.desk("VN");
    submit(&mut vn, advice_request("FR", Precedence::Routine, "already there")).await;
    let before = outbox_len(&mut vn).await;
    for bad in ["not-a-uuid", "12345", " ", &Uuid::nil().to_string(), &format!("{}x", Uuid::now_v7())] {
        let status = vn.submit(request("bad id", bad)).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{bad:?}: {status:?}");
        assert!(status.message().starts_with("client_request_id:"), "{bad:?}: {status:?}");
    }
    assert_eq!(outbox_len(&mut vn).await, before, "nothing stored");
    // A bad id is refused before the content is looked at: the refusal names the id, not the
    // destination.
    let mut bad_everything = request("bad id", "nope");
    bad_everything.destination = "??".into();
    let status = vn.submit(bad_everything).await.unwrap_err();
    assert!(status.message().starts_with("client_request_id:"), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_using_the_same_id_get_two_messages() {
    let clients = [("VN", "police", Role::Agency), ("VN", "customs", Role::Agency)];
    let mut net = Network::with_clients(&["VN", "FR"], &clients).await;
    net.start("VN").await;
    let (mut police, mut customs) = (net.desk_as("VN", "police"), net.desk_as("VN", "customs"));
    let request_id = Uuid::now_v7().to_string();

    let polices = submit_answer(&mut police, request("same id", &request_id)).await;
    let customs_own = submit_answer(&mut customs, request("same id", &request_id)).await;
    assert!(!polices.replayed && !customs_own.replayed, "each client's first call stores");
    assert_ne!(id_of(&polices), id_of(&customs_own));
    // Each client's retry gets its own message, never the other's.
    assert_eq!(id_of(&submit_answer(&mut police, request("same id", &request_id)).await), id_of(&polices));
    assert_eq!(
        id_of(&submit_answer(&mut customs, request("same id", &request_id)).await),
        id_of(&customs_own)
    );
    assert_eq!(outbox_with(&mut police, "same id").await.len(), 1, "police sees its own");
    assert_eq!(outbox_with(&mut customs, "same id").await.len(), 1, "customs sees its own");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_identical_submits_store_one_message() {
    let mut net = Network::new(&["VN", "FR"]).await;
    net.start("VN").await;
    net.start("FR").await;
    // Rounds: each time 16 calls with one id at once, on separate connections.
    for round in 0..5 {
        let request_id = Uuid::now_v7().to_string();
        let subject = format!("at once {round}");
        let mut calls = tokio::task::JoinSet::new();
        // Every connection is made first (a read on each), then all 16 calls start together.
        let start = std::sync::Arc::new(tokio::sync::Barrier::new(16));
        for _ in 0..16 {
            let (mut desk, request) = (net.desk("VN"), request(&subject, &request_id));
            outbox_len(&mut desk).await;
            let start = std::sync::Arc::clone(&start);
            calls.spawn(async move {
                start.wait().await;
                desk.submit(request).await.map(|r| r.into_inner())
            });
        }
        let answers: Vec<SubmitResponse> =
            calls.join_all().await.into_iter().map(|answer| answer.unwrap()).collect();
        let first = id_of(&answers[0]);
        assert!(answers.iter().all(|a| id_of(a) == first), "one message for all: {answers:#?}");
        assert_eq!(answers.iter().filter(|a| !a.replayed).count(), 1, "exactly one call stored");
        assert_eq!(outbox_with(&mut net.desk("VN"), &subject).await.len(), 1);
    }
    // And the one message goes out once.
    let mut fr = net.desk("FR");
    eventually("the five requests reach FR", async || inbox(&mut fr).await.len() == 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_between_the_store_and_the_answer_a_retry_gets_the_stored_message() {
    let net = Network::new(&["VN", "FR"]).await;
    let armed = "submit-answer:2";
    let vn_process = net.spawn_with_env("VN", &[(hanoi247::store::crash_point::VARIABLE, armed)]).await;
    let mut vn = net.desk("VN");
    let before = submit_answer(&mut vn, request("before the crash", &Uuid::now_v7().to_string())).await;
    let request_id = Uuid::now_v7().to_string();
    let lost = vn.submit(request("lost answer", &request_id)).await.unwrap_err();
    eprintln!("the caller saw: {lost:?}");
    let mut vn_process = vn_process;
    let status = wait_exit(&mut vn_process.child).await;
    assert_eq!(status.signal(), Some(9), "killed by its crash point: {status:?}");

    let _vn_process = net.spawn("VN").await;
    let mut vn = net.desk("VN");
    let retry = submit_answer(&mut vn, request("lost answer", &request_id)).await;
    assert!(retry.replayed, "the message was stored before the crash: the retry replays it");
    let stored = outbox_with(&mut vn, "lost answer").await;
    assert_eq!(stored.len(), 1, "exactly one message");
    assert_eq!(stored[0].envelope.as_ref().unwrap().id, id_of(&retry));
    assert_eq!(outbox_with(&mut vn, "before the crash").await.len(), 1);
    assert!(!before.replayed);
    // A second retry, after the restart, is the same answer again.
    assert_eq!(id_of(&submit_answer(&mut vn, request("lost answer", &request_id)).await), id_of(&retry));
}

/// Issue 16, acceptance 3: the same, by an agency, for a request listing an attachment: the
/// retry yields one message, listing the attachment, whose content the agency downloads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agencys_submit_with_an_attachment_killed_before_its_answer_is_one_message_on_retry() {
    // `duty`: the officer the harness asks whether the node is ready.
    let clients = [("VN", "duty", Role::Officer), ("VN", "police", Role::Agency)];
    let net = Network::with_clients(&["VN", "FR"], &clients).await;
    let armed = "submit-answer:1";
    let vn_process = net.spawn_with_env("VN", &[(hanoi247::store::crash_point::VARIABLE, armed)]).await;
    let mut police = net.desk_as("VN", "police");
    let evidence = b"subscriber,ip\njane,192.0.2.7\n".repeat(1000);
    let attachment =
        upload_attachment(&mut police, "subscribers.csv", "text/csv", evidence.clone()).await.unwrap();
    let request_id = Uuid::now_v7().to_string();
    let with_file =
        || SubmitRequest { attachments: vec![attachment.clone()], ..request("with a file", &request_id) };
    let lost = police.submit(with_file()).await.unwrap_err();
    eprintln!("the caller saw: {lost:?}");
    let mut vn_process = vn_process;
    let status = wait_exit(&mut vn_process.child).await;
    assert_eq!(status.signal(), Some(9), "killed by its crash point: {status:?}");

    let _vn_process = net.spawn("VN").await;
    let mut police = net.desk_as("VN", "police");
    let retry = submit_answer(&mut police, with_file()).await;
    assert!(retry.replayed, "stored before the crash: the retry replays it");
    let stored = outbox_with(&mut police, "with a file").await;
    assert_eq!(stored.len(), 1, "exactly one message");
    let listed = &stored[0].envelope.as_ref().unwrap().attachments;
    assert_eq!(listed.as_slice(), std::slice::from_ref(&attachment));
    let id = id_of(&retry);
    assert_eq!(download_attachment(&mut police, &id, &attachment.sha256).await.unwrap(), evidence);
}

/// The exit status of a node that is about to die (within the deadline).
async fn wait_exit(child: &mut std::process::Child) -> std::process::ExitStatus {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(tokio::time::Instant::now() < deadline, "the node did not die");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A replay is in the audit log as a `Submit` naming the message and the request id, by the
/// caller; nobody reading the log mistakes it for a second request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_is_audited_as_such() {
    let clients = [("VN", "duty", Role::Officer), ("VN", "auditor", Role::Auditor)];
    let mut net = Network::with_clients(&["VN", "FR"], &clients).await;
    net.start("VN").await;
    let mut duty = net.desk_as("VN", "duty");
    let request_id = Uuid::now_v7().to_string();
    let first = submit_answer(&mut duty, request("audited", &request_id)).await;
    submit_answer(&mut duty, request("audited", &request_id)).await;
    let mut auditor = net.desk_as("VN", "auditor");
    let request = ListAuditRequest { message_id: id_of(&first), ..Default::default() };
    let mut stream = auditor.list_audit(request).await.unwrap().into_inner();
    let mut submits = Vec::new();
    while let Some(record) = stream.next().await {
        let record = record.unwrap();
        if record.action == "Submit" {
            submits.push(record.details);
        }
    }
    assert_eq!(submits.len(), 2, "{submits:?}");
    assert_eq!(submits[1], format!("replayed: client request id {request_id}"));
}

/// `hanoi247 send` makes a request id and, when the node is killed between storing and
/// answering, retries by itself until the restarted node answers: one message, and the CLI says
/// it retried and that the node had it already.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_retries_with_its_request_id_across_a_node_restart() {
    let net = Network::new(&["VN", "FR"]).await;
    let armed = "submit-answer:1";
    let mut vn_process = net.spawn_with_env("VN", &[(hanoi247::store::crash_point::VARIABLE, armed)]).await;
    let stderr_path = net.dir().join("send.stderr");
    let send = Command::new(env!("CARGO_BIN_EXE_hanoi247"))
        .args(["send", "--to", "FR", "--type", "technical-advice", "--precedence", "routine"])
        .args(["--subject", "sent by the cli", "--config"])
        .arg(net.client_config_path("VN"))
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let status = wait_exit(&mut vn_process.child).await;
    assert_eq!(status.signal(), Some(9), "killed by its crash point: {status:?}");
    // The CLI is retrying meanwhile; the node comes back on the same port.
    let _vn_process = net.spawn("VN").await;
    let output = tokio::task::spawn_blocking(move || send.wait_with_output()).await.unwrap().unwrap();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    assert!(output.status.success(), "send failed: {stderr}");
    assert!(stderr.contains("retrying in"), "the CLI did not say it retried: {stderr}");
    assert!(stderr.contains("had already stored this request"), "{stderr}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let mut vn = net.desk("VN");
    let stored = outbox_with(&mut vn, "sent by the cli").await;
    assert_eq!(stored.len(), 1, "one message: {stderr}");
    let id = &stored[0].envelope.as_ref().unwrap().id;
    assert!(stdout.starts_with(id.as_str()), "the CLI prints the stored id: {stdout}");
}

/// The Python agency kit (`examples/agency-python`) does the same as the CLI: VN is killed
/// between storing its request and answering, `agency.py` retries with its request id until the
/// restarted VN answers that it has the request, and follows it to FR's answer. One message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_kit_retries_with_its_request_id_across_a_node_restart() {
    use crate::support::python::{Venv, cached_venv, read};
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/agency-python");
    let has_tomllib = Command::new("python3")
        .args(["-c", "import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)"])
        .status()
        .is_ok_and(|status| status.success());
    if !has_tomllib {
        let _ = writeln!(std::io::stderr(), "SKIPPED: agency.py needs python3 3.11 or later");
        return;
    }
    let requirements = example.join("requirements.txt");
    // The same cache as `agency_python`'s test: the venv is built once.
    let python =
        match tokio::task::spawn_blocking(move || cached_venv("agency-venv", &requirements)).await.unwrap() {
            Venv::Ready(python) => python,
            Venv::PypiUnreachable(reason) => {
                let _ = writeln!(std::io::stderr(), "SKIPPED: PyPI unreachable: {reason}");
                return;
            }
            Venv::Unavailable(reason) => {
                let _ = writeln!(std::io::stderr(), "SKIPPED: {reason}");
                return;
            }
        };
    // VN's first client is an officer: `spawn` reads its inbox to know the node is ready.
    let clients = [("VN", "duty", Role::Officer), ("VN", "police-a05", Role::Agency)];
    let mut net = Network::with_clients(&["VN", "FR"], &clients).await;
    net.start("FR").await;
    let armed = "submit-answer:1";
    let mut vn_process = net.spawn_with_env("VN", &[(hanoi247::store::crash_point::VARIABLE, armed)]).await;
    let log = net.dir().join("agency.log");
    let log_file = std::fs::File::create(&log).unwrap();
    let mut agency = Command::new(&python)
        .arg(example.join("agency.py"))
        .arg("--config")
        .arg(net.client_config_path_of("VN", "police-a05"))
        .args(["--to", "FR", "--timeout", "60", "--stubs"])
        .arg(net.dir().join("stubs"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .unwrap();
    let killed = wait_exit(&mut vn_process.child).await;
    assert_eq!(killed.signal(), Some(9), "killed by its crash point: {killed:?}\n{}", read(&log));
    let _vn_process = net.spawn("VN").await;

    // FR's officer answers the one request that arrives.
    let mut fr = net.desk("FR");
    let mut arrived = Vec::new();
    eventually("the agency's request reaches FR", async || {
        arrived = inbox(&mut fr).await;
        !arrived.is_empty()
    })
    .await;
    let id = arrived[0].envelope.as_ref().unwrap().id.clone();
    fr.respond(hanoi247::proto::RespondRequest {
        id: id.clone(),
        text: "Preserved".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let status = wait_exit(&mut agency).await;
    let output = read(&log);
    assert!(status.success(), "agency.py exited {status}:\n{output}");
    assert!(output.contains("retrying in"), "agency.py did not say it retried:\n{output}");
    assert!(output.contains("had already stored this request"), "{output}");
    assert!(output.contains(&format!("submitted {id}")), "{output}");
    assert!(output.contains("ANSWERED by FR: Preserved"), "{output}");
    assert_eq!(inbox(&mut fr).await.len(), 1, "FR received one request");
    let mut police = net.desk_as("VN", "police-a05");
    assert_eq!(outbox(&mut police).await.len(), 1, "VN stored one request:\n{output}");
    net.stop("FR").await;
}
