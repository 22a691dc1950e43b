//! Pages and search of the inbox and outbox, and the machine-readable details of refusals:
//! paging stays exact while messages arrive, search respects agency scope, a refused field is
//! named in a `google.rpc.BadRequest` detail.

use std::collections::HashSet;

use hanoi247::cli::desk_client::DeskClient;
use hanoi247::domain::access::Role;
use hanoi247::proto::{
    ListAuditRequest, ListAuditResponse, ListInboxRequest, ListOutboxRequest, Message, Precedence,
    SubmitRequest,
};
use tokio_stream::StreamExt;
use tonic_types::StatusExt;

use crate::support::*;

/// Submits `count` requests at `desk` (subject "bulk <i>"), `parallel` at a time; their ids.
async fn submit_many(desk: &DeskClient, count: usize, parallel: usize, to: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut next = 0;
    while next < count {
        let batch = (next..count.min(next + parallel)).map(|i| {
            let mut desk = desk.clone();
            let request = advice_request(to, Precedence::Routine, &format!("bulk {i}"));
            tokio::spawn(async move { submit(&mut desk, request).await })
        });
        for task in batch.collect::<Vec<_>>() {
            ids.push(task.await.unwrap());
        }
        next += parallel;
    }
    ids
}

/// Every inbox message from `desk`, following the pages of `limit` each.
async fn whole_inbox(desk: &mut DeskClient, limit: u32) -> Vec<Message> {
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let request = ListInboxRequest { limit, page_token: token.clone(), ..Default::default() };
        let page = desk.list_inbox(request).await.unwrap().into_inner();
        all.extend(page.messages);
        if page.next_page_token.is_empty() {
            return all;
        }
        token = page.next_page_token;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_through_1050_inbox_messages_returns_each_once_while_new_ones_arrive() {
    let mut net = Network::new(&["VN", "FR"]).await;
    net.start("VN").await;
    net.start("FR").await;
    let fr = net.desk("FR");
    let mut vn = net.desk("VN");
    let sent: HashSet<String> = submit_many(&fr, 1050, 32, "VN").await.into_iter().collect();
    assert_eq!(sent.len(), 1050);
    eventually("1,050 messages in VN's inbox", async || whole_inbox(&mut vn, 1000).await.len() == 1050).await;

    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    let mut arrived = Vec::new();
    loop {
        let request = ListInboxRequest { limit: 100, page_token: token.clone(), ..Default::default() };
        let page = vn.list_inbox(request).await.unwrap().into_inner();
        pages += 1;
        assert!(page.messages.len() <= 100);
        seen.extend(ids(&page.messages));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
        // A new message arrives between two pages (on VN's disk before the next page is read).
        let new = submit(&mut net.desk("FR"), advice_request("VN", Precedence::Routine, "new")).await;
        let mut check = net.desk("VN");
        eventually("the new message in VN's inbox", async || {
            ids(&check
                .list_inbox(ListInboxRequest { limit: 1, ..Default::default() })
                .await
                .unwrap()
                .into_inner()
                .messages)
                == vec![new.clone()]
        })
        .await;
        arrived.push(new);
    }
    assert_eq!(pages, 11, "1,050 messages, 100 a page");
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "a message was on two pages");
    assert_eq!(seen.len(), 1050, "the pages hold exactly the messages there when paging began");
    assert!(seen.iter().all(|id| sent.contains(id)));
    assert_eq!(arrived.len(), 10);
    // The newcomers are there for a new listing.
    let now: HashSet<String> = ids(&whole_inbox(&mut vn, 500).await).into_iter().collect();
    assert_eq!(now.len(), 1060);
    assert!(arrived.iter().all(|id| now.contains(id)));
    net.stop("FR").await;
    net.stop("VN").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_page_token_is_invalid_argument_naming_page_token() {
    let mut net = Network::new(&["VN", "FR"]).await;
    net.start("VN").await;
    let mut vn = net.desk("VN");
    let before = whole_inbox(&mut vn, 100).await.len();
    // Not base64; base64 of garbage; an outbox token used on the inbox.
    let outbox_token = {
        submit(&mut vn, advice_request("FR", Precedence::Routine, "one")).await;
        submit(&mut vn, advice_request("FR", Precedence::Routine, "two")).await;
        let page =
            vn.list_outbox(ListOutboxRequest { limit: 1, ..Default::default() }).await.unwrap().into_inner();
        assert!(!page.next_page_token.is_empty(), "two messages, one a page: a next page");
        page.next_page_token
    };
    for token in ["not a token!".to_owned(), "AAAA".to_owned(), outbox_token] {
        let status = vn
            .list_inbox(ListInboxRequest { page_token: token.clone(), ..Default::default() })
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{token}: {status:?}");
        assert!(status.message().starts_with("page_token:"), "{token}: {status:?}");
        let bad = status.get_details_bad_request().expect("a BadRequest detail");
        assert_eq!(bad.field_violations[0].field, "page_token");
        let info = status.get_details_error_info().expect("an ErrorInfo detail");
        assert_eq!((info.reason.as_str(), info.domain.as_str()), ("INVALID_FIELD", "hanoi247"));
    }
    assert_eq!(whole_inbox(&mut vn, 100).await.len(), before, "nothing changed");
    net.stop("VN").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_submit_carries_a_bad_request_detail_naming_the_field() {
    let mut net = Network::new(&["VN", "FR"]).await;
    net.start("VN").await;
    let mut vn = net.desk("VN");
    let cases: [(&str, SubmitRequest); 2] = [
        ("subject", advice_request("FR", Precedence::Routine, "")),
        ("destination", advice_request("vn-lower", Precedence::Routine, "bad destination")),
    ];
    for (field, request) in cases {
        let status = vn.submit(request).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{field}: {status:?}");
        let bad = status.get_details_bad_request().expect("a BadRequest detail");
        assert_eq!(bad.field_violations.len(), 1, "{field}: {bad:?}");
        assert_eq!(bad.field_violations[0].field, field, "{bad:?}");
        assert!(!bad.field_violations[0].description.is_empty());
        let info = status.get_details_error_info().expect("an ErrorInfo detail");
        assert_eq!(info.reason, "INVALID_FIELD");
        assert_eq!(info.domain, "hanoi247");
        assert_eq!(info.metadata.get("field").map(String::as_str), Some(field));
    }
    assert!(outbox(&mut vn).await.is_empty(), "nothing stored");
    net.stop("VN").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_finds_by_case_reference_and_body_word_and_respects_agency_scope() {
    let clients =
        [("VN", "police", Role::Agency), ("VN", "cert", Role::Agency), ("VN", "officer", Role::Officer)];
    let mut net = Network::with_clients(&["VN", "FR"], &clients).await;
    net.start("VN").await;
    net.start("FR").await;
    let (mut police, mut cert) = (net.desk_as("VN", "police"), net.desk_as("VN", "cert"));
    let request = |case: &str, subject: &str, body: &str| SubmitRequest {
        case_reference: case.into(),
        body: body.into(),
        ..advice_request("FR", Precedence::Routine, subject)
    };
    let of_police =
        submit(&mut police, request("VN-2026-0042", "Botnet", "the Kraken botnet C2 servers")).await;
    let of_cert = submit(&mut cert, request("VN-2026-0042", "Botnet too", "kraken again")).await;
    let other = submit(&mut police, request("VN-2026-0099", "Phishing", "a mailbox")).await;

    let outbox_search = async |desk: &mut DeskClient, case: &str, text: &str| {
        let request =
            ListOutboxRequest { case_reference: case.into(), text: text.into(), ..Default::default() };
        ids(&desk.list_outbox(request).await.unwrap().into_inner().messages)
    };
    // By case reference (ignoring ASCII case), only one's own.
    assert_eq!(outbox_search(&mut police, "vn-2026-0042", "").await, vec![of_police.clone()]);
    assert_eq!(outbox_search(&mut cert, "VN-2026-0042", "").await, vec![of_cert.clone()]);
    // By a word of the body, ignoring case; every word must be there.
    assert_eq!(outbox_search(&mut police, "", "KRAKEN").await, vec![of_police.clone()]);
    assert_eq!(outbox_search(&mut police, "", "kraken mailbox").await, Vec::<String>::new());
    assert_eq!(outbox_search(&mut police, "", "mailbox").await, vec![other.clone()]);
    assert_eq!(outbox_search(&mut cert, "", "mailbox").await, Vec::<String>::new(), "police's, not cert's");

    // At FR, the inbox: by case reference, by a word of the subject or body, by peer, by time.
    let mut fr = net.desk("FR");
    for id in [&of_police, &of_cert, &other] {
        eventually("delivered to FR", async || ids(&inbox(&mut fr).await).contains(id)).await;
    }
    let inbox_search = async |desk: &mut DeskClient, request: ListInboxRequest| {
        let mut found = ids(&desk.list_inbox(request).await.unwrap().into_inner().messages);
        found.sort();
        found
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let by_case = ListInboxRequest { case_reference: "VN-2026-0042".into(), ..Default::default() };
    assert_eq!(inbox_search(&mut fr, by_case).await, sorted(vec![of_police.clone(), of_cert.clone()]));
    let by_word = ListInboxRequest { text: "c2".into(), ..Default::default() };
    assert_eq!(inbox_search(&mut fr, by_word).await, vec![of_police.clone()]);
    let by_subject = ListInboxRequest { text: "phishing".into(), peer: "VN".into(), ..Default::default() };
    assert_eq!(inbox_search(&mut fr, by_subject).await, vec![other.clone()]);
    let other_peer = ListInboxRequest { text: "phishing".into(), peer: "DE".into(), ..Default::default() };
    assert_eq!(inbox_search(&mut fr, other_peer).await, Vec::<String>::new());
    let past = prost_types::Timestamp { seconds: 1_000_000_000, nanos: 0 };
    let until_past = ListInboxRequest { until: Some(past), ..Default::default() };
    assert_eq!(inbox_search(&mut fr, until_past).await, Vec::<String>::new());
    let since_past =
        ListInboxRequest { since: Some(past), case_reference: "VN-2026-0099".into(), ..Default::default() };
    assert_eq!(inbox_search(&mut fr, since_past).await, vec![other.clone()]);

    // A search text of more words than limits.max_filter_values is refused naming `text`.
    let long = ListInboxRequest { text: "w ".repeat(33), ..Default::default() };
    let status = fr.list_inbox(long).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert_eq!(status.get_details_bad_request().unwrap().field_violations[0].field, "text");
    let bad_time = ListInboxRequest {
        until: Some(prost_types::Timestamp { seconds: 0, nanos: -1 }),
        ..Default::default()
    };
    let status = fr.list_inbox(bad_time).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert_eq!(status.get_details_bad_request().unwrap().field_violations[0].field, "until");
    net.stop("FR").await;
    net.stop("VN").await;
}

/// Runs the CLI; (success, stdout, stderr).
fn cli(args: &[&str]) -> (bool, String, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_hanoi247")).args(args).output().unwrap();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (output.status.success(), text(&output.stdout), text(&output.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_pages_searches_and_names_the_refused_field() {
    let mut net = Network::new(&["VN", "FR"]).await;
    net.start("VN").await;
    let mut vn = net.desk("VN");
    let mut sent = Vec::new();
    for i in 0..5 {
        let request = SubmitRequest {
            case_reference: format!("CASE-{}", i % 2),
            body: format!("word{i} shared"),
            ..advice_request("FR", Precedence::Routine, &format!("subject {i}"))
        };
        sent.push(submit(&mut vn, request).await);
    }
    let config = net.client_config_path("VN");
    let config = config.to_str().unwrap();
    let listed = |extra: &[&str]| {
        let (ok, stdout, stderr) = cli(&[&["outbox", "--config", config, "--json"], extra].concat());
        assert!(ok, "{extra:?}: {stderr}");
        let messages: Vec<serde_json::Value> = serde_json::from_str(&stdout).unwrap();
        let ids: Vec<String> =
            messages.iter().map(|m| m["envelope"]["id"].as_str().unwrap().to_owned()).collect();
        (ids, stderr)
    };
    // One page of 2, its token on stderr; the next page from it; --all every page.
    let (first, stderr) = listed(&["--limit", "2"]);
    assert_eq!(first.len(), 2);
    let token: serde_json::Value = serde_json::from_str(stderr.trim()).unwrap();
    let token = token["next_page_token"].as_str().unwrap().to_owned();
    let (second, _) = listed(&["--limit", "2", "--page-token", &token]);
    assert_eq!(second.len(), 2);
    assert!(second.iter().all(|id| !first.contains(id)));
    let (all, stderr) = listed(&["--limit", "2", "--all"]);
    assert_eq!(all.iter().collect::<HashSet<_>>(), sent.iter().collect::<HashSet<_>>());
    assert!(stderr.is_empty(), "{stderr}");
    // Search: by case, by word, both.
    assert_eq!(listed(&["--case", "case-1"]).0.len(), 2);
    assert_eq!(listed(&["--search", "WORD3"]).0, vec![sent[3].clone()]);
    assert_eq!(listed(&["--search", "shared", "--case", "CASE-0"]).0.len(), 3);
    assert!(listed(&["--until", "1h"]).0.is_empty());
    // A refused field is named with its reason.
    let (ok, _, stderr) = cli(&["outbox", "--config", config, "--page-token", "garbage!"]);
    assert!(!ok);
    assert!(stderr.contains("INVALID_FIELD") && stderr.contains("page_token:"), "{stderr}");
    assert_eq!(outbox(&mut vn).await.len(), 5, "nothing stored by the refused calls");
    net.stop("VN").await;
}

/// One `ListAudit` call: its records and its next page token ("" when none).
async fn audit_page(desk: &mut DeskClient, limit: u32, token: &str) -> (Vec<ListAuditResponse>, String) {
    let request = ListAuditRequest { limit, page_token: token.into(), ..Default::default() };
    let response = desk.list_audit(request).await.unwrap();
    let next = response
        .metadata()
        .get("hanoi247-next-page-token")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let mut stream = response.into_inner();
    let mut records = Vec::new();
    while let Some(record) = stream.next().await {
        records.push(record.unwrap());
    }
    (records, next)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_pages_to_the_first_pages_head_and_refuses_a_bad_token() {
    let clients = [("VN", "officer", Role::Officer), ("VN", "audit", Role::Auditor)];
    let mut net = Network::with_clients(&["VN", "FR"], &clients).await;
    net.start("VN").await;
    let mut officer = net.desk_as("VN", "officer");
    for i in 0..7 {
        submit(&mut officer, advice_request("FR", Precedence::Routine, &format!("audited {i}"))).await;
    }
    let mut audit = net.desk_as("VN", "audit");
    let mut sequences = Vec::new();
    let (mut records, mut token) = audit_page(&mut audit, 4, "").await;
    let mut pages = 1;
    loop {
        assert!(records.len() <= 4);
        sequences.extend(records.iter().map(|r| r.sequence));
        if token.is_empty() {
            break;
        }
        // Records keep coming (each page's own read is one); the pages end all the same.
        submit(&mut officer, advice_request("FR", Precedence::Routine, "meanwhile")).await;
        (records, token) = audit_page(&mut audit, 4, &token).await;
        pages += 1;
    }
    let first_head = *sequences.last().unwrap();
    assert_eq!(sequences, (1..=first_head).collect::<Vec<_>>(), "each record once, in order");
    assert_eq!(pages, first_head.div_ceil(4));
    let whole = audit_page(&mut audit, 0, "").await;
    assert!(whole.1.is_empty(), "not paged: no token");
    assert!(whole.0.len() as u64 > first_head);

    for token in ["garbage!", "AAAA"] {
        let request = ListAuditRequest { page_token: token.into(), ..Default::default() };
        let status = audit.list_audit(request).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert_eq!(status.get_details_bad_request().unwrap().field_violations[0].field, "page_token");
    }
    net.stop("VN").await;
}
