//! Issue 17, typed outcomes: a response carries what became of the request (executed with the
//! date the data is preserved until, refused with grounds, more information needed, ...), signed
//! with it; the request's state follows the outcome at both ends, which show it (CLI, console,
//! Watch, statistics); each bad outcome is refused naming the field and stores nothing.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hanoi247::cli::desk_client::DeskClient;
use hanoi247::domain::access::Role;
use hanoi247::domain::timestamp;
use hanoi247::proto::{
    GetRequest, GetStatisticsRequest, HelloRequest, Message, MessageState, Outcome, OutcomeKind, Precedence,
    RespondRequest, TrafficDataDisclosure, WatchRequest,
};
use tokio_stream::StreamExt as _;
use tonic_types::StatusExt as _;

use crate::console::{browser, console_port, fetch, urlencode};
use crate::support::*;

const DAY: Duration = Duration::from_secs(86_400);

/// `days` from now, as a proto time.
fn in_days(days: u64) -> prost_types::Timestamp {
    timestamp::from_system(SystemTime::now() + days as u32 * DAY)
}

fn executed(until: prost_types::Timestamp) -> Outcome {
    Outcome {
        kind: OutcomeKind::Executed as i32,
        reference: "PRV-2026-77".into(),
        preserved_until: Some(until),
        ..Default::default()
    }
}

fn answer(id: &str, outcome: Outcome) -> RespondRequest {
    RespondRequest { id: id.into(), text: "done".into(), outcome: Some(outcome), ..Default::default() }
}

/// The request `id` at `desk` once `check` holds for it.
async fn wait_until(desk: &mut DeskClient, id: &str, check: impl Fn(&Message) -> bool) -> Message {
    let mut seen = None;
    eventually(&format!("{id} as expected"), async || {
        let got = desk.get(GetRequest { id: id.into() }).await.unwrap().into_inner().message.unwrap();
        let ok = check(&got);
        seen = Some(got);
        ok
    })
    .await;
    seen.unwrap()
}

fn kind_of(message: &Message) -> Option<OutcomeKind> {
    message.outcome.as_ref().map(|o| o.kind())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_requests_state_follows_its_typed_outcome_at_both_ends() {
    let clients = [("VN", "officer", Role::Officer), ("VN", "operator", Role::Operator)];
    let mut net = Network::with_clients(&["VN", "FR"], &clients).await;
    net.start("VN").await;
    net.start("FR").await;
    let mut vn = net.desk("VN");
    let mut fr = net.desk("FR");
    let mut events = vn.watch(WatchRequest { after_sequence: None }).await.unwrap().into_inner();
    let preservation = submit(&mut vn, preservation_request("FR")).await;
    let advice = submit(&mut vn, advice_request("FR", Precedence::Routine, "which law applies?")).await;
    wait_state(&mut fr, &preservation, MessageState::Received).await;
    wait_state(&mut fr, &advice, MessageState::Received).await;

    // More information needed: the case stays open (ACKNOWLEDGED) at both ends, outcome shown.
    let more = Outcome { kind: OutcomeKind::MoreInformationNeeded as i32, ..Default::default() };
    let at_fr = fr.respond(answer(&preservation, more)).await.unwrap().into_inner().message.unwrap();
    assert_eq!(at_fr.state(), MessageState::Acknowledged);
    assert_eq!(kind_of(&at_fr), Some(OutcomeKind::MoreInformationNeeded));
    let at_vn =
        wait_until(&mut vn, &preservation, |m| kind_of(m) == Some(OutcomeKind::MoreInformationNeeded)).await;
    assert_eq!(at_vn.state(), MessageState::Acknowledged);

    // Executed, preserved until D, with the traffic data that points at a third State.
    let until = in_days(90);
    let mut done = executed(until);
    done.traffic_data = Some(TrafficDataDisclosure {
        provider_or_path: "relay.example via AS64500".into(),
        third_state: "DE".into(),
        ..Default::default()
    });
    let at_fr = fr.respond(answer(&preservation, done)).await.unwrap().into_inner().message.unwrap();
    assert_eq!(at_fr.state(), MessageState::Answered);
    assert_eq!(at_fr.preserved_until, Some(until));
    let at_vn = wait_state(&mut vn, &preservation, MessageState::Answered).await;
    let outcome = at_vn.outcome.clone().unwrap();
    assert_eq!(outcome.kind(), OutcomeKind::Executed);
    assert_eq!(at_vn.preserved_until, Some(until), "recorded at the requesting end too");
    assert_eq!(outcome.reference, "PRV-2026-77");
    let traffic = outcome.traffic_data.unwrap();
    assert_eq!(
        (traffic.third_state.as_str(), traffic.preservation_id.as_str()),
        ("DE", preservation.as_str())
    );
    let event = tokio::time::timeout(DEADLINE, async {
        loop {
            let event = events.next().await.unwrap().unwrap();
            if event.message_id == preservation && event.state() == MessageState::Answered {
                return event;
            }
        }
    })
    .await
    .expect("VN's Watch tells of the answer");
    assert_eq!(event.outcome, "EXECUTED");
    assert!(event.note.contains("answered EXECUTED by FR"), "{event:?}");

    // Refused, with grounds, from the command line.
    let config = net.client_config_path("FR");
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_hanoi247"))
        .args(["respond", &advice, "--config", config.to_str().unwrap(), "--text", "cannot help"])
        .args(["--outcome", "refused", "--grounds", "not a criminal matter here", "--reference", "R-1"])
        .args(["--json"])
        .output()
        .unwrap();
    assert!(refused.status.success(), "{}", String::from_utf8_lossy(&refused.stderr));
    let json: serde_json::Value = serde_json::from_slice(&refused.stdout).unwrap();
    assert_eq!(
        (json["state"].as_str(), json["outcome"]["kind"].as_str()),
        (Some("ANSWERED"), Some("REFUSED"))
    );
    wait_until(&mut vn, &advice, |m| kind_of(m) == Some(OutcomeKind::Refused)).await;

    // `show` and `outbox` at VN, the console and the statistics say so.
    let vn_config = net.client_config_path("VN");
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_hanoi247"))
            .args(args)
            .args(["--config", vn_config.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let shown: serde_json::Value = serde_json::from_str(&cli(&["show", &preservation, "--json"])).unwrap();
    assert_eq!(shown["outcome"]["kind"], "EXECUTED");
    assert_eq!(shown["preserved_until"].as_str(), Some(timestamp::rfc3339(&until).as_str()));
    let response = shown["replies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["envelope"]["kind"] == "RESPONSE" && r["envelope"]["outcome"]["kind"] == "EXECUTED");
    assert!(response.is_some(), "the signed response carries it: {shown}");
    let text = cli(&["show", &preservation]);
    assert!(text.contains("outcome      EXECUTED") && text.contains("third State"), "{text}");
    let table = cli(&["outbox"]);
    assert!(table.lines().any(|l| l.starts_with(&advice) && l.contains("REFUSED")), "{table}");

    let port = console_port(&net, "VN");
    let officer = browser(&net, "VN", "officer");
    let page = fetch(Arc::clone(&officer), port, &format!("/message/{preservation}"), None).await;
    assert!(page.body.contains("Preserved until") && page.body.contains("EXECUTED"), "{}", page.body);
    let printed = fetch(Arc::clone(&officer), port, &format!("/print/{preservation}"), None).await;
    assert!(printed.body.contains("PRV-2026-77"), "{}", printed.body);
    let list = fetch(officer, port, "/outbox", None).await;
    assert!(list.body.contains("badge-outcome"), "{}", list.body);

    let figures =
        net.desk_as("VN", "operator").get_statistics(GetStatisticsRequest::default()).await.unwrap();
    let figures = figures.into_inner();
    for kind in [OutcomeKind::Executed, OutcomeKind::Refused] {
        assert!(figures.rows.iter().any(|r| r.outcome() == kind && r.count == 1), "{kind:?}: {figures:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_outcome_is_refused_naming_its_field_and_stores_nothing() {
    let mut net = Network::new(&["VN", "FR"]).await;
    net.start("VN").await;
    net.start("FR").await;
    let mut vn = net.desk("VN");
    let mut fr = net.desk("FR");
    let preservation = submit(&mut vn, preservation_request("FR")).await;
    let advice = submit(&mut vn, advice_request("FR", Precedence::Routine, "advice")).await;
    wait_state(&mut fr, &preservation, MessageState::Received).await;
    wait_state(&mut fr, &advice, MessageState::Received).await;
    let outbox_before = outbox(&mut fr).await.len();

    let kind = |kind: OutcomeKind| Outcome { kind: kind as i32, ..Default::default() };
    let traffic = |provider: &str, third: &str| Outcome {
        traffic_data: Some(TrafficDataDisclosure {
            provider_or_path: provider.into(),
            third_state: third.into(),
            ..Default::default()
        }),
        ..executed(in_days(90))
    };
    let cases: Vec<(&str, Outcome, &str, &str)> = vec![
        (&preservation, Outcome::default(), "outcome.kind", "required"),
        (&preservation, Outcome { kind: 99, ..Default::default() }, "outcome.kind", "required"),
        (
            &advice,
            kind(OutcomeKind::Refused),
            "outcome.refusal_grounds",
            "required when the outcome is REFUSED",
        ),
        (
            &advice,
            Outcome { refusal_grounds: "why".into(), ..kind(OutcomeKind::Executed) },
            "outcome.refusal_grounds",
            "only for REFUSED",
        ),
        (
            &advice,
            kind(OutcomeKind::Forwarded),
            "outcome.forwarded_to",
            "required when the outcome is FORWARDED",
        ),
        (
            &advice,
            Outcome { forwarded_to: "police".into(), ..kind(OutcomeKind::Executed) },
            "outcome.forwarded_to",
            "only for FORWARDED",
        ),
        (
            &preservation,
            kind(OutcomeKind::Executed),
            "outcome.preserved_until",
            "required when a preservation",
        ),
        (&preservation, kind(OutcomeKind::PartlyExecuted), "outcome.preserved_until", "required"),
        (
            &preservation,
            executed(timestamp::from_system(SystemTime::now() - DAY)),
            "outcome.preserved_until",
            "must be in the future",
        ),
        (
            &preservation,
            executed(in_days(30)),
            "outcome.preserved_until",
            "at least 60 days after the request",
        ),
        (
            &preservation,
            executed(prost_types::Timestamp { seconds: 0, nanos: -1 }),
            "outcome.preserved_until",
            "nanos",
        ),
        (
            &advice,
            Outcome { preserved_until: Some(in_days(90)), ..kind(OutcomeKind::Executed) },
            "outcome.preserved_until",
            "only for an EXECUTED or PARTLY_EXECUTED preservation",
        ),
        (&preservation, traffic(" ", "DE"), "outcome.traffic_data.provider_or_path", "required"),
        (&preservation, traffic("relay", "Germany"), "outcome.traffic_data.third_state", "ISO 3166-1"),
        (
            &advice,
            Outcome {
                refusal_grounds: "no".into(),
                traffic_data: Some(TrafficDataDisclosure {
                    provider_or_path: "x".into(),
                    ..Default::default()
                }),
                ..kind(OutcomeKind::Refused)
            },
            "outcome.traffic_data",
            "only with an EXECUTED",
        ),
        (
            &preservation,
            Outcome { reference: "bell\u{7}".into(), ..executed(in_days(90)) },
            "outcome.reference",
            "U+0007",
        ),
    ];
    for (id, outcome, field, words) in cases {
        let status = fr.respond(answer(id, outcome.clone())).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{outcome:?}: {status:?}");
        assert!(status.message().starts_with(&format!("{field}:")), "{outcome:?}: {status:?}");
        assert!(status.message().contains(words), "{outcome:?}: {status:?}");
        assert_eq!(status.get_details_bad_request().unwrap().field_violations[0].field, field);
    }
    for id in [&preservation, &advice] {
        let request = fr.get(GetRequest { id: id.clone() }).await.unwrap().into_inner().message.unwrap();
        assert_eq!(request.state(), MessageState::Received, "nothing answered");
        assert!(request.outcome.is_none());
    }
    assert_eq!(outbox(&mut fr).await.len(), outbox_before, "nothing queued");

    // The command line refuses an outcome it does not know before calling.
    let config = net.client_config_path("FR");
    let usage = std::process::Command::new(env!("CARGO_BIN_EXE_hanoi247"))
        .args(["respond", &advice, "--config", config.to_str().unwrap(), "--text", "x", "--outcome", "maybe"])
        .output()
        .unwrap();
    assert_eq!(usage.status.code(), Some(2), "a usage error");
    assert!(String::from_utf8_lossy(&usage.stderr).contains("more-information-needed"));

    // Accepted: not possible with grounds (and no date), forwarded with the authority.
    let not_possible = Outcome {
        refusal_grounds: "would alert the suspect".into(),
        ..kind(OutcomeKind::PreservationNotPossible)
    };
    fr.respond(answer(&preservation, not_possible)).await.unwrap();
    fr.respond(answer(
        &advice,
        Outcome { forwarded_to: "Ministry of Justice".into(), ..kind(OutcomeKind::Forwarded) },
    ))
    .await
    .unwrap();
    let at_vn = wait_until(&mut vn, &advice, |m| kind_of(m) == Some(OutcomeKind::Forwarded)).await;
    assert_eq!(at_vn.state(), MessageState::Answered);
    assert_eq!(at_vn.outcome.unwrap().forwarded_to, "Ministry of Justice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_that_says_it_does_not_read_outcomes_is_sent_none() {
    let mut net = Network::new(&["VN", "FR"]).await;
    net.start("VN").await;
    net.start("FR").await;
    let mut vn = net.desk("VN");
    let id = submit(&mut vn, advice_request("FR", Precedence::Routine, "advice")).await;
    let mut fr = net.desk("FR");
    wait_state(&mut fr, &id, MessageState::Received).await;
    net.stop("VN").await;
    // VN as an older version says Hello: no `envelope_fields`.
    let older =
        HelloRequest { node: "VN".into(), software_version: "hanoi247 0.0.9".into(), ..Default::default() };
    net.peer_client("VN", "FR").hello(older).await.unwrap();
    let before = outbox(&mut fr).await.len();
    let refused =
        Outcome { kind: OutcomeKind::Refused as i32, refusal_grounds: "no".into(), ..Default::default() };
    let status = fr.respond(answer(&id, refused)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("hanoi247 0.0.9, which does not read typed outcomes"), "{status:?}");
    assert_eq!(status.get_details_bad_request().unwrap().field_violations[0].field, "outcome");
    assert_eq!(status.get_details_error_info().unwrap().reason, "PEER_CANNOT_READ");
    assert_eq!(outbox(&mut fr).await.len(), before, "nothing stored");
    // A text answer goes as ever.
    fr.respond(RespondRequest { id, text: "no".into(), ..Default::default() }).await.unwrap();
}

/// The console's answer form carries the outcome; a missing field comes back named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_answer_form_sends_the_outcome() {
    let clients = [("FR", "officer", Role::Officer)];
    let mut net = Network::with_clients(&["VN", "FR"], &clients).await;
    net.start("VN").await;
    net.start("FR").await;
    let mut vn = net.desk("VN");
    let id = submit(&mut vn, preservation_request("FR")).await;
    let mut fr = net.desk("FR");
    wait_state(&mut fr, &id, MessageState::Received).await;
    let port = console_port(&net, "FR");
    let officer = browser(&net, "FR", "officer");
    let page = fetch(Arc::clone(&officer), port, &format!("/message/{id}"), None).await;
    assert!(page.body.contains("name=\"outcome\"") && page.body.contains("name=\"outcome.preserved_until\""));
    let token = page.token();
    let path = format!("/message/{id}/respond");
    let missing = urlencode(&[("csrf", &token), ("text", "preserved"), ("outcome", "EXECUTED")]);
    let refused = fetch(Arc::clone(&officer), port, &path, Some(&missing)).await;
    assert!(refused.body.contains("outcome.preserved_until"), "{}", refused.body);
    let day = timestamp::rfc3339(&in_days(120))[..10].to_owned();
    let form = urlencode(&[
        ("csrf", &token),
        ("text", "preserved"),
        ("outcome", "EXECUTED"),
        ("outcome.preserved_until", &day),
        ("outcome.reference", "FR-PRV-9"),
    ]);
    let done = fetch(Arc::clone(&officer), port, &path, Some(&form)).await;
    assert_eq!(done.status, 303, "{}", done.body);
    let at_vn = wait_state(&mut vn, &id, MessageState::Answered).await;
    let until = timestamp::rfc3339(&at_vn.preserved_until.unwrap());
    assert_eq!(until, format!("{day}T23:59:59.000Z"), "the end of the day chosen");
}

/// Acceptance 2: an exercise, even one answered with an outcome, is kept out of `hanoi247 stats`
/// at both ends; the real request beside it is counted, with its outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exercise_is_kept_out_of_stats_and_the_real_answer_counted_by_its_outcome() {
    let clients = [
        ("VN", "officer", Role::Officer),
        ("VN", "operator", Role::Operator),
        ("FR", "officer", Role::Officer),
        ("FR", "operator", Role::Operator),
    ];
    let mut net = Network::with_clients(&["VN", "FR"], &clients).await;
    net.start("VN").await;
    net.start("FR").await;
    let (mut vn, mut fr) = (net.desk("VN"), net.desk("FR"));
    let drill =
        submit(&mut vn, hanoi247::proto::SubmitRequest { exercise: true, ..preservation_request("FR") })
            .await;
    let real = submit(&mut vn, preservation_request("FR")).await;
    for id in [&drill, &real] {
        wait_state(&mut fr, id, MessageState::Received).await;
        fr.respond(answer(id, executed(in_days(90)))).await.unwrap();
        wait_state(&mut vn, id, MessageState::Answered).await;
    }
    for (node, direction) in [("VN", "sent"), ("FR", "received")] {
        let config = net.client_config_path_of(node, "operator");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_hanoi247"))
            .args(["stats", "--json", "--config", config.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{node}: {}", String::from_utf8_lossy(&out.stderr));
        let figures: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(figures["exercises_excluded"], 1, "{node}: {figures}");
        let rows = figures["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 1, "{node}: only the real request: {figures}");
        let row = &rows[0];
        assert_eq!(
            (
                row["direction"].as_str(),
                row["state"].as_str(),
                row["outcome"].as_str(),
                row["count"].as_u64()
            ),
            (Some(direction), Some("ANSWERED"), Some("EXECUTED"), Some(1)),
            "{node}: {figures}"
        );
    }
}
