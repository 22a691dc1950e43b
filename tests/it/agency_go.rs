//! The Go agency example (`examples/agency-go`) against real nodes: `build.sh` generates Go code
//! from our protos with Debian's protoc, protoc-gen-go and protoc-gen-go-grpc and builds the
//! client with Debian's Go gRPC packages into a temp dir (nothing cached in the repository;
//! Go's own build cache speeds up later runs). The client submits a preservation request through
//! VN's desk API; VN is killed by its crash point between storing the request and answering, the
//! client retries under the same client request id until the restarted VN answers with the
//! message it stored, follows `Watch` across the restart, and prints FR's answer, which this test
//! gives as FR's desk officer.
//!
//! Without Go, protoc or the plugins (`build.sh` exits 77) the test prints `SKIPPED: <reason>`
//! and returns; `.ci/run` installs them as root. Any other build failure fails the test.

use std::fs::File;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hanoi247::cli::desk_client::DeskClient;
use hanoi247::domain::access::Role;
use hanoi247::proto::{AcknowledgeRequest, Message, MessageState, Precedence, RequestType, RespondRequest};
use serde_json::Value;

use crate::support::python::{read, run_with_deadline, skipped};
use crate::support::*;

/// Generating the code and building the client: Go compiles gRPC from source the first time, on
/// a machine that may be busy compiling Rust too.
const BUILD_DEADLINE: Duration = Duration::from_secs(600);
/// `agency-go -timeout`: how long it follows `Watch`; the test waits a little longer for it.
const AGENCY_TIMEOUT_SECS: u64 = 90;
/// `build.sh`'s exit status when a tool or package is missing.
const BUILD_MISSING_TOOLS: i32 = 77;

fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/agency-go")
}

/// A child process that is killed if the test fails before it exits.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The client built into `out`, or why it cannot be built here (`Err`: skip the test).
fn build_client(out: &Path) -> Result<PathBuf, String> {
    let log = out.join("build.log");
    // One compile at a time: the other tests' nodes share the machine's cores with this build.
    let mut build = Command::new(example_dir().join("build.sh"));
    build.arg(out).env("GOMAXPROCS", "1");
    let built = run_with_deadline(&mut build, &log, BUILD_DEADLINE);
    if built.status.code() == Some(BUILD_MISSING_TOOLS) {
        return Err(built.output.trim().to_owned());
    }
    assert!(built.status.success(), "build.sh failed ({}):\n{}", built.status, built.output);
    let binary = out.join("agency-go");
    assert!(binary.is_file(), "build.sh did not write {}:\n{}", binary.display(), built.output);
    Ok(binary)
}

/// Every line the client printed, each a JSON object with a `type`.
fn json_lines(log: &Path) -> Vec<Value> {
    let text = read(log);
    text.lines()
        .map(|line| {
            let value: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}\n{text}"));
            assert!(value["type"].is_string(), "a line without a type: {line}");
            value
        })
        .collect()
}

/// The lines of `kind`.
fn of_type<'a>(lines: &'a [Value], kind: &str) -> Vec<&'a Value> {
    lines.iter().filter(|line| line["type"] == kind).collect()
}

/// The messages from VN in FR's inbox.
async fn from_vn(fr: &mut DeskClient) -> Vec<Message> {
    inbox(fr).await.into_iter().filter(|m| m.envelope.as_ref().unwrap().origin == "VN").collect()
}

/// The preservation request from VN in FR's inbox, once it is there.
async fn wait_for_request(fr: &mut DeskClient, agency: &mut Child, log: &Path) -> Message {
    let deadline = tokio::time::Instant::now() + DEADLINE * 2;
    loop {
        let found = from_vn(fr)
            .await
            .into_iter()
            .find(|m| m.envelope.as_ref().unwrap().request_type() == RequestType::Preservation);
        if let Some(message) = found {
            return message;
        }
        if let Some(status) = agency.try_wait().unwrap() {
            panic!("agency-go exited ({status}) before its request reached FR:\n{}", read(log));
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no request from agency-go in FR's inbox within {:?}:\n{}",
            DEADLINE * 2,
            read(log)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The exit status of `child` (within `within`).
async fn wait_exit(child: &mut Child, within: Duration, what: &str, log: &Path) -> std::process::ExitStatus {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} still running after {within:?}:\n{}",
            read(log)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `agency-go` with VN's agency client against FR, output (stdout and stderr) into `log`.
fn spawn_agency(binary: &Path, net: &Network, log: &Path, extra: &[&str]) -> KillOnDrop {
    let log_file = File::create(log).unwrap();
    KillOnDrop(
        Command::new(binary)
            .arg("-config")
            .arg(net.client_config_path_of("VN", "police-a05"))
            .args(["-to", "FR", "-timeout", &AGENCY_TIMEOUT_SECS.to_string()])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_agency_retries_with_its_request_id_across_a_restart_and_gets_the_answer() {
    let build_dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let binary = match tokio::task::spawn_blocking({
        let out = build_dir.path().to_owned();
        move || build_client(&out)
    })
    .await
    .unwrap()
    {
        Ok(binary) => binary,
        Err(reason) => {
            skipped(&format!("the Go agency example cannot be built here: {reason}"));
            return;
        }
    };
    eprintln!("agency-go built in {:?}", started.elapsed());

    // VN's first client is an officer (`spawn` reads its inbox to know the node is ready); the
    // agency's system is an `agency` client. FR gets init's default officer, played by this test.
    let clients = [("VN", "duty", Role::Officer), ("VN", "police-a05", Role::Agency)];
    let mut net = Network::with_clients(&["VN", "FR"], &clients).await;
    net.start("FR").await;
    let armed = "submit-answer:1";
    let mut vn_process = net.spawn_with_env("VN", &[(hanoi247::store::crash_point::VARIABLE, armed)]).await;

    let log = net.dir().join("agency-go.log");
    let mut agency = spawn_agency(&binary, &net, &log, &[]);
    let killed = wait_exit(&mut vn_process.child, DEADLINE, "VN with its crash point armed", &log).await;
    assert_eq!(killed.signal(), Some(9), "killed by its crash point: {killed:?}\n{}", read(&log));
    // The client is retrying meanwhile; VN comes back on the same port.
    let _vn_process = net.spawn("VN").await;

    // This test is FR's desk officer: take the request and answer it.
    let mut fr = net.desk("FR");
    let request = wait_for_request(&mut fr, &mut agency.0, &log).await;
    let envelope = request.envelope.as_ref().unwrap();
    let id = envelope.id.clone();
    assert_eq!(envelope.precedence(), Precedence::Flash);
    let preservation = envelope.preservation.as_ref().expect("preservation fields travelled");
    assert_eq!(preservation.preservation_days, 90);
    assert!(preservation.mutual_legal_assistance_to_follow);
    fr.acknowledge(AcknowledgeRequest { id: id.clone(), note: "duty officer has it".into() }).await.unwrap();
    let answer = "Preserved for 90 days under reference FR-PRES-0042";
    fr.respond(RespondRequest { id: id.clone(), text: answer.into(), ..Default::default() }).await.unwrap();

    let within = Duration::from_secs(AGENCY_TIMEOUT_SECS + 30);
    let status = wait_exit(&mut agency.0, within, "agency-go", &log).await;
    let lines = json_lines(&log);
    let output = read(&log);
    assert!(status.success(), "agency-go exited {status}:\n{output}");

    // One request id for every attempt, and the attempt that got through was answered with the
    // message stored before the crash: the one FR holds.
    let submitted = of_type(&lines, "submitted");
    assert_eq!(submitted.len(), 1, "{output}");
    let request_id = submitted[0]["client_request_id"].as_str().expect("a client request id");
    uuid::Uuid::parse_str(request_id).unwrap_or_else(|e| panic!("{request_id} is not a UUID ({e})"));
    let retries = of_type(&lines, "submit_retry");
    assert!(!retries.is_empty(), "agency-go did not retry:\n{output}");
    assert!(retries.iter().all(|r| r["client_request_id"] == request_id), "another id in a retry:\n{output}");
    assert_eq!(submitted[0]["replayed"], true, "the retry must get the stored message:\n{output}");
    assert_eq!(submitted[0]["id"], id.as_str(), "the retry yielded another message:\n{output}");

    // Exactly once, at both ends.
    let at_fr = from_vn(&mut fr).await;
    assert_eq!(ids(&at_fr), vec![id.clone()], "FR got the request exactly once");
    let mut vn = net.desk_as("VN", "duty");
    assert_eq!(ids(&outbox(&mut vn).await), vec![id.clone()], "VN stored it once");

    // Every step arrived on Watch (resumed after the restart), in order, and the answer came back.
    let position = |state: &str| {
        lines
            .iter()
            .position(|l| l["type"] == "event" && l["state"] == state)
            .unwrap_or_else(|| panic!("no {state} event printed:\n{output}"))
    };
    assert!(!of_type(&lines, "watch_interrupted").is_empty(), "Watch broke with VN:\n{output}");
    let sequences: Vec<u64> =
        of_type(&lines, "event").iter().map(|e| e["sequence"].as_u64().unwrap()).collect();
    assert!(sequences.windows(2).all(|pair| pair[0] < pair[1]), "an event twice or out of order:\n{output}");
    assert!(position("DELIVERED") < position("ACKNOWLEDGED"), "{output}");
    assert!(position("ACKNOWLEDGED") < position("ANSWERED"), "{output}");
    let answered = of_type(&lines, "answered");
    assert_eq!(answered.len(), 1, "{output}");
    assert_eq!(answered[0]["id"], id.as_str());
    assert_eq!(answered[0]["by"], "FR");
    assert_eq!(answered[0]["text"], answer);
    wait_state(&mut vn, &id, MessageState::Answered).await;

    // A request the node refuses: exit 3, the status code and the field named, nothing stored.
    let refused_log = net.dir().join("agency-go-refused.log");
    let mut refused = spawn_agency(&binary, &net, &refused_log, &["-days", "10"]);
    let status = wait_exit(&mut refused.0, DEADLINE, "agency-go -days 10", &refused_log).await;
    assert_eq!(status.code(), Some(3), "{}", read(&refused_log));
    let lines = json_lines(&refused_log);
    let errors = of_type(&lines, "error");
    assert_eq!(errors.len(), 1, "{lines:?}");
    assert_eq!(errors[0]["during"], "submit");
    assert_eq!(errors[0]["code"], "INVALID_ARGUMENT");
    let message = errors[0]["message"].as_str().unwrap();
    assert!(message.contains("preservation_days"), "names the field: {message}");
    assert!(of_type(&lines, "submitted").is_empty(), "{lines:?}");
    assert_eq!(ids(&outbox(&mut vn).await), vec![id.clone()], "nothing stored at VN");
    assert_eq!(ids(&from_vn(&mut fr).await), vec![id], "nothing sent to FR");
    net.stop("FR").await;
    eprintln!("Go agency example passed in {:?}", started.elapsed());
}
