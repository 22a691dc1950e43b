//! Issue 14, bullets 1, 5 and 6: what a hostile member or a careless client sends at the edges.
//! Times out of range and text with terminal controls or bidi overrides are refused at the desk
//! (`Submit`) and per envelope at the peer edge (`Deliver`), naming the field, storing nothing,
//! and the node goes on serving; `watch` piped into a reader that goes away survives its node's
//! SIGTERM restart and ends quietly, not by a signal.

use std::io::{BufRead as _, BufReader};
use std::os::unix::process::ExitStatusExt as _;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use hanoi247::domain::timestamp;
use hanoi247::proto::delivery_result::Outcome;
use hanoi247::proto::{AcknowledgeRequest, DeliverRequest, DeliveryResult, ListInboxRequest, Precedence};
use prost_types::Timestamp;

use crate::support::*;

/// INVALID_ARGUMENT whose message starts with `field`.
fn assert_names(status: &tonic::Status, field: &str) {
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().starts_with(&format!("{field}:")), "should name {field}: {}", status.message());
}

/// Each result is a refusal naming the field given for it (INVALID_ARGUMENT), or a receipt for `None`.
fn assert_outcomes(results: &[DeliveryResult], expected: &[Option<&str>]) {
    assert_eq!(results.len(), expected.len(), "{results:?}");
    for (result, field) in results.iter().zip(expected) {
        match (&result.outcome, field) {
            (Some(Outcome::Receipt(_)), None) => {}
            (Some(Outcome::Refusal(refusal)), Some(field)) => {
                assert_eq!(refusal.code, tonic::Code::InvalidArgument as i32, "{refusal:?}");
                assert!(
                    refusal.message.starts_with(&format!("{field}:")),
                    "should name {field}: {refusal:?}"
                );
            }
            (outcome, field) => panic!("expected a refusal naming {field:?}, got {outcome:?}"),
        }
    }
}

fn at(time: SystemTime) -> Option<Timestamp> {
    Some(timestamp::from_system(time))
}

/// Bullet 1: `nanos` out of range, years past 9999, `created_at` ahead of the receiver's clock and
/// lifetimes over `limits.max_lifetime` are refused at both edges; nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_times_are_refused_at_both_edges_naming_the_field() {
    let mut net = Network::new(&["VN", "FR"]).await;
    net.start("VN").await;
    let mut vn = net.desk("VN");
    let now = SystemTime::now();
    let day = Duration::from_secs(86_400);

    let year_10000 = Timestamp { seconds: 253_402_300_800, nanos: 0 };
    let wrong_nanos = Timestamp { seconds: timestamp::now().seconds + 86_400, nanos: 2_000_000_000 };
    for expires_at in [year_10000, wrong_nanos, timestamp::from_system(now + 400 * day)] {
        let mut request = advice_request("FR", Precedence::Flash, "when?");
        request.expires_at = Some(expires_at);
        assert_names(&vn.submit(request).await.unwrap_err(), "expires_at");
    }
    let since = Timestamp { seconds: 0, nanos: -1 };
    let status =
        vn.list_inbox(ListInboxRequest { since: Some(since), ..Default::default() }).await.unwrap_err();
    assert_names(&status, "since");
    let requeue = hanoi247::proto::RequeueRequest {
        id: uuid::Uuid::now_v7().to_string(),
        expires_at: Some(Timestamp { seconds: i64::MAX, nanos: i32::MAX }),
    };
    assert_names(&net.desk_as("VN", "operator").requeue(requeue).await.unwrap_err(), "expires_at");
    assert!(outbox(&mut vn).await.is_empty(), "nothing stored");

    // From a peer: each envelope refused on its own, the good one stored.
    let batch = vec![
        signed_request(&net, "FR", "VN", |e| e.created_at = at(now + Duration::from_secs(3600))),
        signed_request(&net, "FR", "VN", |e| e.expires_at = Some(year_10000)),
        signed_request(&net, "FR", "VN", |e| {
            e.created_at = Some(Timestamp { nanos: 2_000_000_000, ..timestamp::now() })
        }),
        signed_request(&net, "FR", "VN", |e| e.expires_at = at(now + 400 * day)),
        signed_request(&net, "FR", "VN", |e| e.expires_at = at(now - day)),
        // Created long ago (it waited in a queue): fine.
        signed_request(&net, "FR", "VN", |e| e.created_at = at(now - 30 * day)),
    ];
    let good = batch[5].id.clone();
    let results = net
        .peer_client("FR", "VN")
        .deliver(DeliverRequest { envelopes: batch, ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_outcomes(
        &results,
        &[
            Some("created_at"),
            Some("expires_at"),
            Some("created_at"),
            Some("expires_at"),
            Some("expires_at"),
            None,
        ],
    );
    assert_eq!(ids(&inbox(&mut vn).await), [good], "only the good envelope stored");

    // Still serving: a sane request goes through, and the stored message renders.
    let mut sane = advice_request("FR", Precedence::Flash, "sane");
    sane.expires_at = at(now + 30 * day);
    let id = submit(&mut vn, sane).await;
    let message = vn.get(hanoi247::proto::GetRequest { id }).await.unwrap().into_inner().message.unwrap();
    assert!(!hanoi247::cli::render::message_details(&message, &[]).contains("invalid time"));
    net.stop("VN").await;
}

/// Bullet 5: a subject with `ESC ] 0 ; … BEL`, C1 controls and bidi overrides are refused at
/// both edges naming the field; what an older version stored is printed escaped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_and_bidi_overrides_are_refused_at_both_edges() {
    let mut net = Network::new(&["VN", "FR"]).await;
    net.start("VN").await;
    let mut vn = net.desk("VN");
    let osc = "Urgent \u{1b}]0;you have been pwned\u{7}";

    let mut request = advice_request("FR", Precedence::Flash, osc);
    assert_names(&vn.submit(request.clone()).await.unwrap_err(), "subject");
    request.subject = "invoice \u{202E}fdp.exe".into();
    assert_names(&vn.submit(request.clone()).await.unwrap_err(), "subject");
    request.subject = "fine".into();
    request.case_reference = "VN-\u{85}1".into();
    assert_names(&vn.submit(request.clone()).await.unwrap_err(), "case_reference");
    request.case_reference = String::new();
    request.body = "line\n\u{1b}[2Jcleared".into();
    assert_names(&vn.submit(request.clone()).await.unwrap_err(), "body");
    assert!(outbox(&mut vn).await.is_empty(), "nothing stored");

    let batch = vec![
        signed_request(&net, "FR", "VN", |e| e.subject = osc.into()),
        signed_request(&net, "FR", "VN", |e| e.body = "look \u{2066}here\u{2069}".into()),
        signed_request(&net, "FR", "VN", |e| {
            e.attachments.push(hanoi247::proto::Attachment {
                name: "a\u{9b}b.csv".into(),
                media_type: "text/csv".into(),
                size_bytes: 1,
                sha256: vec![0; 32],
            })
        }),
        // Tabs, CRLF newlines and right-to-left marks are text.
        signed_request(&net, "FR", "VN", |e| {
            e.subject = "طلب \u{200F}(RLM)".into();
            e.body = "one\r\n\ttwo\n".into();
        }),
    ];
    let good = batch[3].id.clone();
    let results = net
        .peer_client("FR", "VN")
        .deliver(DeliverRequest { envelopes: batch, ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_outcomes(&results, &[Some("subject"), Some("body"), Some("attachments[0].name"), None]);
    let stored = inbox(&mut vn).await;
    assert_eq!(ids(&stored), std::slice::from_ref(&good), "only the good envelope stored");
    let status = vn
        .acknowledge(AcknowledgeRequest { id: good.clone(), note: "ok\u{1b}]52;c;cGF5bG9hZA==\u{7}".into() })
        .await
        .unwrap_err();
    assert_names(&status, "note");
    assert_eq!(inbox(&mut vn).await[0].state(), stored[0].state(), "the refused note changed nothing");

    // Still serving.
    submit(&mut vn, advice_request("FR", Precedence::Flash, "plain")).await;
    // Stored by an older version: shown escaped, never raw.
    let mut old = stored[0].clone();
    old.envelope.as_mut().unwrap().subject = osc.into();
    let table = hanoi247::cli::render::message_table(std::slice::from_ref(&old));
    assert!(!table.contains('\u{1b}') && table.contains("Urgent \\u{1b}]0;"), "{table}");
    net.stop("VN").await;
}

/// Bullet 6: `hanoi247 watch` piped into a reader that closes its end, across a SIGTERM restart
/// of its node: it reconnects, and when it next writes to the closed pipe it ends with exit 0,
/// not killed by SIGPIPE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_piped_into_a_closed_reader_survives_a_restart_and_ends_quietly() {
    let net = Network::new(&["VN", "FR"]).await;
    let vn_process = net.spawn("VN").await;
    let client = net.client_config_path("VN");
    let mut watcher = Command::new(env!("CARGO_BIN_EXE_hanoi247"))
        .args(["watch", "--after", "0", "--config", client.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = Arc::new(Mutex::new(String::new()));
    let (watcher_err, log) = (watcher.stderr.take().unwrap(), Arc::clone(&stderr));
    std::thread::spawn(move || {
        for line in BufReader::new(watcher_err).lines() {
            let Ok(line) = line else { break };
            log.lock().unwrap().push_str(&(line + "\n"));
        }
    });
    // The reader takes one line, then exits: its end of the pipe closes.
    let mut reader = Command::new("head")
        .args(["-n", "1"])
        .stdin(Stdio::from(watcher.stdout.take().unwrap()))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();

    // The node restarts under the watcher.
    let status = vn_process.terminate().await;
    assert!(status.success(), "{status:?}");
    eventually("watch notices the node went away", async || stderr.lock().unwrap().contains("reconnecting"))
        .await;
    let vn_process = net.spawn("VN").await;
    assert!(
        watcher.try_wait().unwrap().is_none(),
        "watch died across the restart: {}",
        stderr.lock().unwrap()
    );

    // An event: the reader takes its line and goes; the next event is written to a closed pipe.
    let mut vn = net.desk("VN");
    submit(&mut vn, advice_request("FR", Precedence::Flash, "first")).await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let read = loop {
        if let Some(status) = reader.try_wait().unwrap() {
            break status;
        }
        assert!(tokio::time::Instant::now() < deadline, "the reader got no line");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(read.success());
    let mut line = String::new();
    BufReader::new(reader.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert!(!line.is_empty());
    submit(&mut vn, advice_request("FR", Precedence::Flash, "second")).await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let ended = loop {
        if let Some(status) = watcher.try_wait().unwrap() {
            break status;
        }
        assert!(tokio::time::Instant::now() < deadline, "watch did not end after its reader went away");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(ended.signal(), None, "watch died by signal: {ended:?}");
    assert_eq!(ended.code(), Some(0), "{ended:?}: {}", stderr.lock().unwrap());
    // The node still serves.
    assert_eq!(outbox(&mut vn).await.len(), 2);
    drop(vn_process);
}
