//! Issue 17, exercises: a request flagged as an exercise (a drill) is marked EXERCISE at both
//! ends, with its replies, in events, lists and the console, is left out of the statistics, and
//! `hanoi247 drill` checks a peer with one; a peer whose `Hello` says it does not read the flag
//! (an older version) is never sent one.

use std::sync::Arc;

use hanoi247::domain::access::Role;
use hanoi247::proto::{
    GetRequest, GetStatisticsRequest, HelloRequest, MessageState, Precedence, RespondRequest, SubmitRequest,
    WatchRequest,
};
use tokio_stream::StreamExt as _;
use tonic_types::StatusExt as _;

use crate::console::{browser, console_port, fetch};
use crate::support::*;

fn exercise_to(destination: &str) -> SubmitRequest {
    SubmitRequest {
        exercise: true,
        ..advice_request(destination, Precedence::Flash, "Drill: reach the desk")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exercise_is_marked_at_both_ends_with_its_replies_and_left_out_of_the_statistics() {
    let clients = [("VN", "officer", Role::Officer), ("VN", "operator", Role::Operator)];
    let mut net = Network::with_clients(&["VN", "FR"], &clients).await;
    net.start("VN").await;
    net.start("FR").await;
    let mut fr = net.desk("FR");
    let mut events = fr.watch(WatchRequest { after_sequence: None }).await.unwrap().into_inner();
    let mut vn = net.desk("VN");
    let drill = submit(&mut vn, exercise_to("FR")).await;
    let real = submit(&mut vn, advice_request("FR", Precedence::Routine, "a real one")).await;
    let received = wait_state(&mut fr, &drill, MessageState::Received).await;
    assert!(received.envelope.as_ref().unwrap().exercise, "signed and carried to FR");
    let event = loop {
        let event = events.next().await.unwrap().unwrap();
        if event.message_id == drill && event.state() == MessageState::Received {
            break event;
        }
    };
    assert!(event.exercise, "FR's Watch says so: {event:?}");
    fr.respond(RespondRequest { id: drill.clone(), text: "drill answered".into(), ..Default::default() })
        .await
        .unwrap();
    wait_state(&mut vn, &drill, MessageState::Answered).await;
    let replies = vn.get(GetRequest { id: drill.clone() }).await.unwrap().into_inner().replies;
    assert!(!replies.is_empty() && replies.iter().all(|r| r.envelope.as_ref().unwrap().exercise));
    wait_state(&mut fr, &real, MessageState::Received).await;

    for node in ["VN", "FR"] {
        let figures =
            net.desk_as(node, "operator").get_statistics(GetStatisticsRequest::default()).await.unwrap();
        let figures = figures.into_inner();
        assert_eq!(figures.exercises_excluded, 1, "{node}: {figures:?}");
        assert_eq!(figures.rows.iter().map(|r| r.count).sum::<u64>(), 1, "{node}: only the real one");
    }

    let config = net.client_config_path("FR");
    let table = std::process::Command::new(env!("CARGO_BIN_EXE_hanoi247"))
        .args(["inbox", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let table = String::from_utf8(table.stdout).unwrap();
    let line = table.lines().find(|l| l.starts_with(&drill)).unwrap();
    assert!(line.contains("[EXERCISE] Drill: reach the desk"), "{table}");
    assert!(!table.lines().find(|l| l.starts_with(&real)).unwrap().contains("EXERCISE"));

    let port = console_port(&net, "FR");
    let officer = browser(&net, "FR", "officer");
    let inbox = fetch(Arc::clone(&officer), port, "/inbox", None).await;
    assert!(inbox.body.contains("badge-exercise"), "{}", inbox.body);
    let page = fetch(officer, port, &format!("/message/{drill}"), None).await;
    assert!(page.body.contains("EXERCISE: a drill, not a real request."), "{}", page.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanoi247_drill_reports_the_receipt_and_exits_5_when_the_peer_does_not_answer() {
    let mut net = Network::new(&["VN", "FR"]).await;
    net.start("VN").await;
    net.start("FR").await;
    let config = net.client_config_path("VN");
    let drill = |wait: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_hanoi247"))
            .args(["drill", "--to", "FR", "--wait", wait, "--config", config.to_str().unwrap()])
            .output()
            .unwrap()
    };
    let done = drill("30s");
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    let said = String::from_utf8(done.stdout).unwrap();
    assert!(said.starts_with("FR stored the drill request") && said.contains("signed receipt"), "{said}");
    let id = said.split_whitespace().nth(5).unwrap().to_owned();
    let at_fr = net.desk("FR").get(GetRequest { id }).await.unwrap().into_inner().message.unwrap();
    assert!(at_fr.envelope.unwrap().exercise, "the drill is an exercise at FR");

    net.stop("FR").await;
    let failed = drill("1s");
    assert_eq!(failed.status.code(), Some(5), "unreachable");
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(stderr.contains("was not receipted within 1s") && stderr.contains("hanoi247 peers"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_says_it_does_not_read_the_flag_is_sent_no_exercise() {
    let mut net = Network::new(&["VN", "FR"]).await;
    net.start("VN").await;
    // FR as an older version says Hello: no `envelope_fields` (FR's node itself is not running).
    let older =
        HelloRequest { node: "FR".into(), software_version: "hanoi247 0.0.9".into(), ..Default::default() };
    net.peer_client("FR", "VN").hello(older).await.unwrap();
    let mut vn = net.desk("VN");
    let before = outbox(&mut vn).await.len();
    let status = vn.submit(exercise_to("FR")).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("hanoi247 0.0.9, which does not read the exercise flag"), "{status:?}");
    assert_eq!(status.get_details_bad_request().unwrap().field_violations[0].field, "exercise");
    assert_eq!(status.get_details_error_info().unwrap().reason, "PEER_CANNOT_READ");
    assert_eq!(outbox(&mut vn).await.len(), before, "nothing stored");
    // A real request to it is sent as ever.
    submit(&mut vn, advice_request("FR", Precedence::Routine, "real")).await;
}
