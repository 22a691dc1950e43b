//! The Python agency example (`examples/agency-python`) against real nodes: a virtualenv with the
//! pinned grpcio from PyPI (cached under the target directory, keyed by `requirements.txt`), stubs
//! generated from our protos by `generate.py`, and `agency.py` submitting a preservation request
//! through VN's desk API and following `Watch` while this test acts as FR's desk officer.
//!
//! When PyPI cannot be reached the test prints `SKIPPED: PyPI unreachable: <reason>` and returns;
//! any other failure to build the virtualenv fails the test.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hanoi247::domain::access::Role;
use hanoi247::proto::{
    AcknowledgeRequest, HandlingCode, Message, MessageState, Precedence, RequestType, RespondRequest,
};

use crate::support::python::{Venv, cached_venv, read, run_with_deadline, skipped};
use crate::support::*;

/// Generating the stubs.
const GENERATE_DEADLINE: Duration = Duration::from_secs(60);
/// `agency.py --timeout`: how long it follows `Watch`; the test waits a little longer for it.
const AGENCY_TIMEOUT_SECS: u64 = 60;

fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/agency-python")
}

/// The example's virtualenv (`<target>/tmp/agency-venv`); `agency.py` reads TOML with the
/// standard library's `tomllib`, so it needs Python 3.11.
fn agency_venv() -> Venv {
    cached_venv("agency-venv", &example_dir().join("requirements.txt"))
}

/// A child process that is killed if the test fails before it exits.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The preservation request from VN in FR's inbox, once it is there.
async fn wait_for_request(
    fr: &mut hanoi247::cli::desk_client::DeskClient,
    agency: &mut Child,
    log: &Path,
) -> Message {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let found = inbox(fr).await.into_iter().find(|m| {
            let envelope = m.envelope.as_ref().unwrap();
            envelope.origin == "VN" && envelope.request_type() == RequestType::Preservation
        });
        if let Some(message) = found {
            return message;
        }
        if let Some(status) = agency.try_wait().unwrap() {
            panic!("agency.py exited ({status}) before its request reached FR:\n{}", read(log));
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no request from agency.py in FR's inbox within {DEADLINE:?}:\n{}",
            read(log)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_agency_submits_preservation_and_follows_it_until_answered() {
    let started = Instant::now();
    let python = match tokio::task::spawn_blocking(agency_venv).await.unwrap() {
        Venv::Ready(python) => python,
        Venv::PypiUnreachable(reason) => {
            skipped(&format!("PyPI unreachable: {reason}"));
            return;
        }
        Venv::Unavailable(reason) => {
            skipped(&format!("the agency example needs Python: {reason}"));
            return;
        }
    };
    eprintln!("agency venv ready in {:?}", started.elapsed());

    // VN's only desk client is the agency's system (role agency: it may submit, and see only what
    // it submitted); FR gets init's default officer, played by this test.
    let mut net = Network::with_clients(&["VN", "FR"], &[("VN", "police-a05", Role::Agency)]).await;
    net.start("VN").await;
    net.start("FR").await;
    let work = net.dir().to_owned();

    // Stubs from our protos, as an agency would make them, outside the source tree.
    let stubs = work.join("stubs");
    let generated = tokio::task::spawn_blocking({
        let (python, stubs, log) = (python.clone(), stubs.clone(), work.join("generate.log"));
        move || {
            run_with_deadline(
                Command::new(python)
                    .arg(example_dir().join("generate.py"))
                    .arg("--out")
                    .arg(stubs)
                    .env("PYTHONDONTWRITEBYTECODE", "1"),
                &log,
                GENERATE_DEADLINE,
            )
        }
    })
    .await
    .unwrap();
    assert!(generated.status.success(), "generate.py failed:\n{}", generated.output);
    for stub in ["desk_pb2.py", "desk_pb2_grpc.py", "envelope_pb2.py"] {
        assert!(stubs.join("hanoi247/v1").join(stub).is_file(), "generate.py did not write {stub}");
    }

    // Evidence to attach, and where the answer's attachments go.
    let evidence = work.join("mailbox-headers.csv");
    std::fs::write(&evidence, "received,from\n2026-11-30T10:00Z,phisher@example.net\n").unwrap();
    let saved = work.join("saved");

    let log = work.join("agency.log");
    let log_file = File::create(&log).unwrap();
    let mut agency = KillOnDrop(
        Command::new(&python)
            .arg(example_dir().join("agency.py"))
            .arg("--config")
            .arg(net.client_config_path_of("VN", "police-a05"))
            .args(["--to", "FR", "--timeout", &AGENCY_TIMEOUT_SECS.to_string(), "--stubs"])
            .arg(&stubs)
            .arg("--attach")
            .arg(&evidence)
            .arg("--save-attachments")
            .arg(&saved)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap(),
    );

    // This test is FR's desk officer: take the request and answer it.
    let mut fr = net.desk("FR");
    let request = wait_for_request(&mut fr, &mut agency.0, &log).await;
    let envelope = request.envelope.as_ref().unwrap();
    let id = envelope.id.clone();
    assert_eq!(envelope.precedence(), Precedence::Flash);
    assert_eq!(envelope.handling_code(), HandlingCode::H2);
    let preservation = envelope.preservation.as_ref().expect("preservation fields travelled");
    for (field, value) in [
        ("requesting_authority", &preservation.requesting_authority),
        ("offence", &preservation.offence),
        ("facts", &preservation.facts),
        ("data_to_preserve", &preservation.data_to_preserve),
        ("link_to_offence", &preservation.link_to_offence),
        ("custodian_or_location", &preservation.custodian_or_location),
        ("necessity", &preservation.necessity),
    ] {
        assert!(!value.is_empty(), "preservation.{field} is empty at FR");
    }
    assert!(preservation.mutual_legal_assistance_to_follow);
    assert_eq!(preservation.preservation_days, 90);

    // The attachment travelled with it: FR serves the content the agency uploaded.
    let listed = &envelope.attachments;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!((listed[0].name.as_str(), listed[0].media_type.as_str()), ("mailbox-headers.csv", "text/csv"));
    let content =
        hanoi247::cli::desk_client::download_attachment(&mut fr, &id, &listed[0].sha256).await.unwrap();
    assert_eq!(content, std::fs::read(&evidence).unwrap());

    fr.acknowledge(AcknowledgeRequest { id: id.clone(), note: "duty officer has it".into() }).await.unwrap();
    let answer = "Preserved for 90 days under reference FR-PRES-0042";
    let order = b"preservation order FR-PRES-0042".to_vec();
    let attached =
        hanoi247::cli::desk_client::upload_attachment(&mut fr, "order.txt", "text/plain", order.clone())
            .await
            .unwrap();
    let respond = RespondRequest {
        id: id.clone(),
        text: answer.into(),
        attachments: vec![attached],
        ..Default::default()
    };
    fr.respond(respond).await.unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(AGENCY_TIMEOUT_SECS + 30);
    let status = loop {
        if let Some(status) = agency.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "agency.py still running after the answer:\n{}",
            read(&log)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let output = read(&log);
    assert!(status.success(), "agency.py exited {status}:\n{output}");

    assert!(output.contains(&format!("submitted {id}")), "agency.py submitted another id:\n{output}");
    assert!(output.contains(&format!("ANSWERED by FR: {answer}")), "no answer printed:\n{output}");
    assert!(output.contains("uploaded mailbox-headers.csv"), "{output}");
    assert!(output.contains("(SHA-256 checked)"), "{output}");
    assert_eq!(std::fs::read(saved.join("order.txt")).unwrap(), order, "the answer's attachment, saved");
    // Every step arrived on Watch, in order, for this request.
    let position = |state: &str| {
        output
            .lines()
            .position(|l| l.starts_with("event") && l.contains(&format!(" {state} ")))
            .unwrap_or_else(|| panic!("no {state} event printed:\n{output}"))
    };
    assert!(position("DELIVERED") < position("ACKNOWLEDGED"), "{output}");
    assert!(position("ACKNOWLEDGED") < position("ANSWERED"), "{output}");

    let mut vn = net.desk_as("VN", "police-a05");
    let done = wait_state(&mut vn, &id, MessageState::Answered).await;
    assert_eq!(done.envelope.unwrap().destination, "FR");
    net.stop("VN").await;
    net.stop("FR").await;
    eprintln!("agency example passed in {:?}", started.elapsed());
}
