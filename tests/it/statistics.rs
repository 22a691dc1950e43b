//! Issue 17, statistics: `GetStatistics`, `hanoi247 stats` and the console's statistics page
//! count requests sent and received by type, precedence, peer and state, with the median and
//! 90th percentile of the time to receipt, acknowledgement and answer — counts and times only.

use std::sync::Arc;

use hanoi247::domain::access::Role;
use hanoi247::proto::{
    AcknowledgeRequest, Direction, GetStatisticsRequest, GetStatisticsResponse, MessageState, Precedence,
    RequestType, RespondRequest, TimeMeasure,
};

use tonic_types::StatusExt as _;

use crate::console::{browser, console_port, fetch};
use crate::support::*;

const SECRET: &str = "Zanzibar";

/// VN sent FR three FLASH preservation requests and one ROUTINE technical advice; FR answered
/// the first and acknowledged the second.
async fn exchanged() -> (Network, Vec<String>) {
    let clients = [
        ("VN", "officer", Role::Officer),
        ("VN", "operator", Role::Operator),
        ("VN", "auditor", Role::Auditor),
        ("VN", "police", Role::Agency),
    ];
    let mut net = Network::with_clients(&["VN", "FR"], &clients).await;
    net.start("VN").await;
    net.start("FR").await;
    let mut vn = net.desk("VN");
    let mut ids = Vec::new();
    for _ in 0..3 {
        let mut request = preservation_request("FR");
        request.subject = format!("{SECRET} mailbox");
        ids.push(submit(&mut vn, request).await);
    }
    ids.push(submit(&mut vn, advice_request("FR", Precedence::Routine, SECRET)).await);
    let mut fr = net.desk("FR");
    for id in &ids {
        wait_state(&mut fr, id, MessageState::Received).await;
    }
    let respond =
        RespondRequest { id: ids[0].clone(), text: format!("{SECRET} preserved"), ..Default::default() };
    fr.respond(respond).await.unwrap();
    fr.acknowledge(AcknowledgeRequest { id: ids[1].clone(), note: String::new() }).await.unwrap();
    wait_state(&mut vn, &ids[0], MessageState::Answered).await;
    wait_state(&mut vn, &ids[1], MessageState::Acknowledged).await;
    for id in &ids[2..] {
        wait_state(&mut vn, id, MessageState::Delivered).await;
    }
    (net, ids)
}

fn count(figures: &GetStatisticsResponse, direction: Direction, state: MessageState) -> u64 {
    figures.rows.iter().filter(|r| r.direction() == direction && r.state() == state).map(|r| r.count).sum()
}

fn times(figures: &GetStatisticsResponse, direction: Direction, measure: TimeMeasure) -> u64 {
    figures.times.iter().find(|t| t.direction() == direction && t.measure() == measure).map_or(0, |t| t.count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_ends_count_the_requests_and_their_times_and_never_their_content() {
    let (net, _) = exchanged().await;
    let all = GetStatisticsRequest::default();
    let vn = net.desk_as("VN", "operator").get_statistics(all).await.unwrap().into_inner();
    assert_eq!(count(&vn, Direction::Outbound, MessageState::Answered), 1, "{vn:?}");
    assert_eq!(count(&vn, Direction::Outbound, MessageState::Acknowledged), 1);
    assert_eq!(count(&vn, Direction::Outbound, MessageState::Delivered), 2);
    let flash = vn.rows.iter().filter(|r| r.precedence() == Precedence::Flash).map(|r| r.count).sum::<u64>();
    let advice = vn.rows.iter().find(|r| r.request_type() == RequestType::TechnicalAdvice).unwrap();
    assert_eq!((flash, advice.count, advice.peer.as_str()), (3, 1, "FR"));
    assert_eq!(times(&vn, Direction::Outbound, TimeMeasure::Receipt), 4);
    assert_eq!(times(&vn, Direction::Outbound, TimeMeasure::Acknowledgement), 2);
    assert_eq!(times(&vn, Direction::Outbound, TimeMeasure::Answer), 1);
    assert!(!format!("{vn:?}").contains(SECRET), "counts and times only");

    // The auditor may read them too; FR counts the same four as received.
    let by_auditor = net.desk_as("VN", "auditor").get_statistics(GetStatisticsRequest::default()).await;
    assert_eq!(by_auditor.unwrap().into_inner().rows.iter().map(|r| r.count).sum::<u64>(), 4);
    let fr = net.desk_as("FR", "operator").get_statistics(GetStatisticsRequest::default()).await.unwrap();
    let fr = fr.into_inner();
    assert_eq!(count(&fr, Direction::Inbound, MessageState::Answered), 1);
    assert_eq!(fr.rows.iter().map(|r| r.count).sum::<u64>(), 4);
    assert_eq!(times(&fr, Direction::Inbound, TimeMeasure::Answer), 1);

    // A period after everything counts nothing.
    let later = GetStatisticsRequest { from: Some(hanoi247::domain::timestamp::after(DEADLINE)), to: None };
    let none = net.desk_as("VN", "operator").get_statistics(later).await;
    assert!(none.unwrap_err().message().starts_with("to:"), "from after now: to is not after from");
    let future = GetStatisticsRequest {
        from: Some(hanoi247::domain::timestamp::after(DEADLINE)),
        to: Some(hanoi247::domain::timestamp::after(DEADLINE * 2)),
    };
    let empty = net.desk_as("VN", "operator").get_statistics(future).await.unwrap().into_inner();
    assert!(empty.rows.is_empty() && empty.times.is_empty(), "{empty:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_period_is_refused_naming_the_field_and_officers_and_agencies_may_not_read_them() {
    let (net, _) = exchanged().await;
    let mut operator = net.desk_as("VN", "operator");
    let before = outbox(&mut net.desk("VN")).await.len();
    let at = |seconds| Some(prost_types::Timestamp { seconds, nanos: 0 });
    for (request, field) in [
        (GetStatisticsRequest { from: at(2_000_000_000), to: at(1_000_000_000) }, "to"),
        (GetStatisticsRequest { from: at(i64::MAX), to: None }, "from"),
        (GetStatisticsRequest { from: None, to: at(i64::MIN) }, "to"),
    ] {
        let status = operator.get_statistics(request).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        let bad = status.get_details_bad_request().expect("a BadRequest detail");
        assert_eq!(bad.field_violations[0].field, field, "{status:?}");
    }
    assert_eq!(outbox(&mut net.desk("VN")).await.len(), before, "nothing stored changes");
    for who in ["officer", "police"] {
        let refused = net.desk_as("VN", who).get_statistics(GetStatisticsRequest::default()).await;
        assert_eq!(refused.unwrap_err().code(), tonic::Code::PermissionDenied, "{who}");
    }
}

fn stats_cli(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_hanoi247"))
        .args(args)
        .args(["--config", config.to_str().unwrap()])
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_prints_a_table_json_and_csv_and_the_console_a_page() {
    let (net, _) = exchanged().await;
    let config = net.client_config_path_of("VN", "operator");
    let json = stats_cli(&config, &["--json", "stats", "--from", "2020-01-01"]);
    assert!(json.status.success(), "{}", String::from_utf8_lossy(&json.stderr));
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(json["from"], "2020-01-01T00:00:00.000Z");
    let rows = json["rows"].as_array().unwrap();
    assert_eq!(rows.iter().map(|r| r["count"].as_u64().unwrap()).sum::<u64>(), 4, "{json}");
    assert!(rows.iter().all(|r| r["direction"] == "sent" && r["peer"] == "FR"), "{json}");
    assert!(json["times"].as_array().unwrap().iter().any(|t| t["measure"] == "answer"), "{json}");

    let csv = stats_cli(&config, &["stats", "--csv"]);
    let csv = String::from_utf8(csv.stdout).unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some(
            "record,direction,request_type,precedence,peer,state,outcome,measure,count,p50_seconds,p90_seconds"
        )
    );
    assert!(lines.all(|l| l.split(',').count() == 11), "{csv}");
    assert!(csv.contains("count,sent,PRESERVATION,FLASH,FR,ANSWERED,,,1,,"), "{csv}");

    let table = String::from_utf8(stats_cli(&config, &["stats"]).stdout).unwrap();
    assert!(table.contains("sent to answer"), "{table}");

    let refused = stats_cli(&config, &["stats", "--from", "2026-13-45"]);
    assert_eq!(refused.status.code(), Some(2), "a usage error");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--from: '2026-13-45' is not a date"));

    let port = console_port(&net, "VN");
    let operator = browser(&net, "VN", "operator");
    let page = fetch(Arc::clone(&operator), port, "/statistics?from=2020-01-01", None).await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("<td>PRESERVATION</td>") && page.body.contains("sent to answer"),
        "{}",
        page.body
    );
    assert!(!page.body.contains(SECRET), "counts and times only");
    let bad = fetch(Arc::clone(&operator), port, "/statistics?from=2021-01-01&to=2020-01-01", None).await;
    assert_eq!(bad.status, 422);
    assert!(bad.body.contains("must be after"), "{}", bad.body);
    let officer = fetch(browser(&net, "VN", "officer"), port, "/statistics", None).await;
    assert_eq!(officer.status, 403);
    assert!(!officer.body.contains("href=\"/statistics\""), "not in an officer's navigation");
}
