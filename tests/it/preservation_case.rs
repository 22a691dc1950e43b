//! Issue 17, acceptance: a preservation case walked at both ends through the command line's
//! JSON (the real binary) and the console (HTTP GETs): the request, its acknowledgement, the
//! outcome "executed, preserved until D", reminders before D with the clock moved (never waited
//! for), an extension with a new D, "mutual legal assistance request sent" and the final answer.
//! Plus the follow-ups' bad input: refused naming the field, nothing stored.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hanoi247::domain::access::Role;
use hanoi247::domain::clock::Clock;
use hanoi247::domain::timestamp;
use hanoi247::proto::{PreservationFollowUp, RequestType, SubmitRequest, WatchRequest, WatchResponse};
use serde_json::Value;
use tokio_stream::StreamExt as _;

use crate::console::{browser, console_port, fetch};
use crate::support::*;

const DAY: Duration = Duration::from_secs(86_400);

/// Runs the CLI with `config` and `--json`; its stdout as JSON (it must succeed).
fn cli(config: &Path, args: &[&str]) -> Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hanoi247"))
        .args(args)
        .args(["--config", config.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// The day of `at` (what `--preserved-until` and `--until` take), and the time it stands for.
fn day(at: SystemTime) -> (String, String) {
    let day = timestamp::rfc3339(&timestamp::from_system(at))[..10].to_owned();
    let end = format!("{day}T23:59:59.000Z");
    (day, end)
}

/// `show ID --json` at `config`, once `check` holds for it.
async fn show_until(config: &Path, id: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    eventually(what, async || {
        last = cli(config, &["show", id]);
        check(&last)
    })
    .await;
    last
}

/// The next reminder event for `id` on `events`.
async fn reminder(events: &mut tonic::Streaming<WatchResponse>, id: &str) -> WatchResponse {
    tokio::time::timeout(DEADLINE, async {
        loop {
            let event = events.next().await.unwrap().unwrap();
            if event.message_id == id && event.preservation_reminder {
                return event;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("a preservation reminder for {id}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preservation_case_walks_at_both_ends_through_the_cli_and_the_console() {
    let clients = [("VN", "officer", Role::Officer), ("FR", "officer", Role::Officer)];
    let mut net = Network::with_clients(&["VN", "FR"], &clients).await;
    let start = SystemTime::now();
    let manual = Clock::manual(start);
    // One clock for both nodes: the test moves time at both ends at once.
    net.start_with_clock("VN", manual.clock()).await;
    net.start_with_clock("FR", manual.clock()).await;
    let (vn, fr) = (net.client_config_path("VN"), net.client_config_path("FR"));
    let mut vn_events =
        net.desk("VN").watch(WatchRequest { after_sequence: None }).await.unwrap().into_inner();
    let mut fr_events =
        net.desk("FR").watch(WatchRequest { after_sequence: None }).await.unwrap().into_inner();

    // The request, from VN's command line.
    let fields = [
        "requesting_authority=Ministry of Public Security, A05",
        "offence=fraud",
        "facts=phishing campaign",
        "data_to_preserve=mailbox and IP logs",
        "link_to_offence=sent the phishing mails",
        "custodian_or_location=provider X",
        "necessity=deleted in 24h",
        "mutual_legal_assistance_to_follow=true",
        "preservation_days=90",
    ];
    let mut send = vec!["send", "--to", "FR", "--type", "preservation", "--precedence", "flash"];
    send.extend(["--subject", "Preserve mailbox"]);
    for field in &fields {
        send.extend(["--field", field]);
    }
    let sent = cli(&vn, &send);
    let id = sent["envelope"]["id"].as_str().unwrap().to_owned();

    // FR acknowledges, then answers "executed, preserved until D".
    show_until(&fr, &id, "FR holds the request", |m| m["state"] == "RECEIVED").await;
    assert_eq!(cli(&fr, &["ack", &id])["state"], "ACKNOWLEDGED");
    show_until(&vn, &id, "VN hears of the acknowledgement", |m| m["state"] == "ACKNOWLEDGED").await;
    let (d, d_time) = day(start + 90 * DAY);
    let answered =
        cli(&fr, &["respond", &id, "--text", "preserved", "--outcome", "executed", "--preserved-until", &d]);
    assert_eq!(
        (answered["state"].as_str(), answered["outcome"]["kind"].as_str()),
        (Some("ANSWERED"), Some("EXECUTED"))
    );
    assert_eq!(answered["preserved_until"], d_time.as_str());
    let at_vn =
        show_until(&vn, &id, "VN records the date", |m| m["preserved_until"] == d_time.as_str()).await;
    assert_eq!(
        (at_vn["state"].as_str(), at_vn["outcome"]["kind"].as_str()),
        (Some("ANSWERED"), Some("EXECUTED"))
    );
    let cases = cli(&vn, &["cases", "--expiring", "14d"]);
    assert_eq!(cases.as_array().unwrap().len(), 0, "90 days left: {cases}");

    // Time moves to 10 days before D: the 14-day reminder at both ends, and `cases` shows it.
    manual.set(start + 80 * DAY);
    for events in [&mut vn_events, &mut fr_events] {
        let event = reminder(events, &id).await;
        assert!(event.note.contains("PRESERVATION LAPSES") && event.note.contains("14days"), "{event:?}");
    }
    for config in [&vn, &fr] {
        let cases = cli(config, &["cases", "--expiring", "14d"]);
        let ids: Vec<&str> =
            cases.as_array().unwrap().iter().filter_map(|c| c["envelope"]["id"].as_str()).collect();
        assert_eq!(ids, [id.as_str()], "{cases}");
        assert!(cli(config, &["cases", "--expiring", "7d"]).as_array().unwrap().is_empty());
    }
    // 6 days before D: the 7-day reminder, and the gauge counts it.
    manual.set(start + 84 * DAY);
    reminder(&mut vn_events, &id).await;
    let port = net.config("VN").metrics.listen.port();
    eventually("the gauge counts the preservation", async || {
        tokio::task::spawn_blocking(move || {
            let got = crate::operator_view::metric(port, "hanoi247_preservations_expiring_7d{}");
            got == Some(1.0)
        })
        .await
        .unwrap()
    })
    .await;

    // VN asks for an extension to D2; FR executes it: D2 at both ends.
    let (d2, d2_time) = day(start + 150 * DAY);
    let extension = cli(&vn, &["extend", &id, "--until", &d2]);
    let extension_id = extension["envelope"]["id"].as_str().unwrap().to_owned();
    assert_eq!(extension["envelope"]["in_reply_to"], id.as_str());
    assert_eq!(extension["envelope"]["follow_up"]["extend_until"], d2_time.as_str());
    show_until(&fr, &extension_id, "FR holds the extension", |m| m["state"] == "RECEIVED").await;
    cli(
        &fr,
        &["respond", &extension_id, "--text", "extended", "--outcome", "executed", "--preserved-until", &d2],
    );
    for config in [&vn, &fr] {
        show_until(config, &id, "the preservation's new date", |m| m["preserved_until"] == d2_time.as_str())
            .await;
    }
    for config in [&vn, &fr] {
        assert!(cli(config, &["cases", "--expiring", "14d"]).as_array().unwrap().is_empty(), "D2 is far");
    }

    // "MLA request sent", with its reference, recorded on the case at both ends.
    let note = cli(&vn, &["mla-sent", &id, "--reference", "MLA-2027-0042"]);
    let note_id = note["envelope"]["id"].as_str().unwrap().to_owned();
    for config in [&vn, &fr] {
        show_until(config, &id, "the MLA reference", |m| m["mla_reference"] == "MLA-2027-0042").await;
    }
    // The final answer: FR keeps the data pending the decision on the MLA request, to D3.
    show_until(&fr, &note_id, "FR holds the note", |m| m["state"] == "RECEIVED").await;
    let (d3, d3_time) = day(start + 240 * DAY);
    cli(
        &fr,
        &[
            "respond",
            &note_id,
            "--text",
            "kept pending the decision",
            "--outcome",
            "executed",
            "--preserved-until",
            &d3,
        ],
    );
    show_until(&vn, &note_id, "the final answer", |m| m["state"] == "ANSWERED").await;
    let case = show_until(&vn, &id, "D3 on the case", |m| m["preserved_until"] == d3_time.as_str()).await;
    let kinds: Vec<&str> =
        case["replies"].as_array().unwrap().iter().filter_map(|r| r["envelope"]["kind"].as_str()).collect();
    assert!(
        kinds.contains(&"ACKNOWLEDGEMENT") && kinds.contains(&"RESPONSE") && kinds.contains(&"REQUEST"),
        "{case}"
    );

    // The console at both ends: the message page, the preservations by days left, the print view.
    for node in ["VN", "FR"] {
        let port = console_port(&net, node);
        let officer = browser(&net, node, "officer");
        let page = fetch(Arc::clone(&officer), port, &format!("/message/{id}"), None).await;
        assert_eq!(page.status, 200);
        for words in ["Preserved until", "EXECUTED", "MLA-2027-0042", &d3_time] {
            assert!(page.body.contains(words), "{node}: {words} in {}", page.body);
        }
        let expiring = fetch(Arc::clone(&officer), port, "/expiring", None).await;
        assert!(expiring.body.contains(&format!("data-id=\"{id}\"")), "{node}: {}", expiring.body);
        let soon = fetch(Arc::clone(&officer), port, "/expiring?within=14d", None).await;
        assert!(!soon.body.contains(&format!("data-id=\"{id}\"")), "{node}: D3 is far: {}", soon.body);
        let bad = fetch(Arc::clone(&officer), port, "/expiring?within=soon", None).await;
        assert_eq!(bad.status, 422, "{}", bad.body);
        let printed = fetch(officer, port, &format!("/print/{id}"), None).await;
        assert!(printed.body.contains("Preserved until"), "{node}: {}", printed.body);
    }

    // Closing the case at VN takes it off VN's preservation clock (no more reminders); FR,
    // which did not close it, keeps its own.
    cli(&vn, &["close", &id, "--reason", "MLA request answered"]);
    let listed = |config| {
        cli(config, &["cases"]).as_array().unwrap().iter().any(|m| m["envelope"]["id"] == id.as_str())
    };
    assert!(!listed(&vn), "a closed case is off the clock");
    assert!(listed(&fr), "the peer keeps its own clock");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_follow_up_is_refused_naming_its_field_and_stores_nothing() {
    let mut net = Network::new(&["VN", "FR"]).await;
    net.start("VN").await;
    net.start("FR").await;
    let mut vn = net.desk("VN");
    let preservation = submit(&mut vn, preservation_request("FR")).await;
    let advice = submit(&mut vn, advice_request("FR", hanoi247::proto::Precedence::Routine, "advice")).await;
    let before = outbox(&mut vn).await.len();
    let follow = |in_reply_to: &str, follow_up: PreservationFollowUp| SubmitRequest {
        destination: "FR".into(),
        request_type: RequestType::Preservation as i32,
        precedence: hanoi247::proto::Precedence::Flash as i32,
        subject: "follow-up".into(),
        in_reply_to: in_reply_to.into(),
        follow_up: Some(follow_up),
        ..Default::default()
    };
    let future = Some(timestamp::from_system(SystemTime::now() + 30 * DAY));
    let past = Some(timestamp::from_system(SystemTime::now() - DAY));
    let mla = |r: &str| PreservationFollowUp { mla_reference: r.into(), ..Default::default() };
    let cases = [
        (follow(&preservation, PreservationFollowUp::default()), "follow_up.extend_until", "required"),
        (
            follow(&preservation, PreservationFollowUp { extend_until: future, mla_reference: "M".into() }),
            "follow_up.mla_reference",
            "not both",
        ),
        (
            follow(&preservation, PreservationFollowUp { extend_until: past, ..Default::default() }),
            "follow_up.extend_until",
            "must be in the future",
        ),
        (follow(&preservation, mla("bell\u{7}")), "follow_up.mla_reference", "U+0007"),
        (follow("", mla("M-1")), "follow_up", "continues a preservation"),
        (follow(&advice, mla("M-1")), "in_reply_to", "continues a PRESERVATION request"),
        (
            SubmitRequest {
                request_type: RequestType::TechnicalAdvice as i32,
                ..follow(&preservation, mla("M-1"))
            },
            "follow_up",
            "only on a PRESERVATION request",
        ),
    ];
    for (request, field, words) in cases {
        let status = vn.submit(request).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{field}: {status:?}");
        assert!(status.message().starts_with(&format!("{field}:")), "{status:?}");
        assert!(status.message().contains(words), "{status:?}");
    }
    assert_eq!(outbox(&mut vn).await.len(), before, "nothing stored");
    let get = hanoi247::proto::GetRequest { id: preservation.clone() };
    assert!(vn.get(get).await.unwrap().into_inner().message.unwrap().mla_reference.is_empty());

    // The command line's follow-ups are for preservations this node sent.
    let config = net.client_config_path("VN");
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_hanoi247"))
        .args(["mla-sent", &advice, "--reference", "M-1", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2), "a usage error");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("is not a preservation request this node sent")
    );
}
