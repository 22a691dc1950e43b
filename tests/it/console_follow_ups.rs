//! Issue 17: the console's two follow-ups of a preservation this node sent, over HTTPS with the
//! officers' certificates: "Ask for an extension" (a date) and "MLA request sent" (a reference)
//! make the same `Submit` as the command line's `extend` and `mla-sent`, and the other State
//! sees them. Every bad input (no date, a date not later than the one the data is preserved
//! until, no reference, a reference with a control character, no form token, a role that may not
//! submit, a preservation this node did not send) is refused on the page naming the field or
//! the reason, and nothing is stored at either end; the command line refuses the same date.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hanoi247::cli::desk_client::DeskClient;
use hanoi247::domain::access::Role;
use hanoi247::domain::timestamp;
use hanoi247::proto::{GetRequest, Message, Outcome, OutcomeKind, RespondRequest};

use crate::console::{browser, console_port, fetch, urlencode};
use crate::support::*;

const DAY: Duration = Duration::from_secs(86_400);

/// The date `days` from now (what `<input type=date>` sends) and the time it stands for.
fn day_in(days: u32) -> (String, prost_types::Timestamp) {
    let at = timestamp::from_system(SystemTime::now() + days * DAY);
    let day = timestamp::rfc3339(&at)[..10].to_owned();
    let end = humantime::parse_rfc3339(&format!("{day}T23:59:59Z")).unwrap();
    (day, timestamp::from_system(end))
}

/// The message `id` at `desk` once `check` holds for it.
async fn get_until(desk: &mut DeskClient, id: &str, what: &str, check: impl Fn(&Message) -> bool) -> Message {
    let mut seen = None;
    eventually(what, async || {
        let got = desk.get(GetRequest { id: id.into() }).await.unwrap().into_inner().message.unwrap();
        let ok = check(&got);
        seen = Some(got);
        ok
    })
    .await;
    seen.unwrap()
}

/// The request `id` and its replies at `desk`.
async fn case(desk: &mut DeskClient, id: &str) -> (Message, Vec<Message>) {
    let got = desk.get(GetRequest { id: id.into() }).await.unwrap().into_inner();
    (got.message.unwrap(), got.replies)
}

/// FR answers `id` "executed, preserved until `until`".
async fn executed(fr: &mut DeskClient, id: &str, until: prost_types::Timestamp) {
    let outcome =
        Outcome { kind: OutcomeKind::Executed as i32, preserved_until: Some(until), ..Default::default() };
    let answer =
        RespondRequest { id: id.into(), text: "kept".into(), outcome: Some(outcome), ..Default::default() };
    fr.respond(answer).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_follow_up_forms_reach_the_other_state_and_refuse_bad_input_naming_the_field() {
    let clients = [
        ("VN", "officer", Role::Officer),
        ("VN", "operator", Role::Operator),
        ("VN", "audit", Role::Auditor),
        ("FR", "officer", Role::Officer),
    ];
    let mut net = Network::with_clients(&["VN", "FR"], &clients).await;
    net.start("VN").await;
    net.start("FR").await;
    let (mut vn, mut fr) = (net.desk("VN"), net.desk("FR"));

    // VN's preservation, answered by FR: "executed, preserved until D".
    let id = submit(&mut vn, preservation_request("FR")).await;
    wait_state(&mut fr, &id, hanoi247::proto::MessageState::Received).await;
    let (d, d_time) = day_in(90);
    executed(&mut fr, &id, d_time).await;
    get_until(&mut vn, &id, "VN records D", |m| m.preserved_until == Some(d_time)).await;

    // The preservation's page at VN offers both forms to the officer, with its form token.
    let port = console_port(&net, "VN");
    let officer = browser(&net, "VN", "officer");
    let path = format!("/message/{id}");
    let page = fetch(Arc::clone(&officer), port, &path, None).await;
    assert_eq!(page.status, 200, "{}", page.body);
    for form in ["extend", "mla-sent"] {
        assert!(page.body.contains(&format!("action=\"/message/{id}/{form}\"")), "{form}: {}", page.body);
    }
    for words in ["Ask for an extension", "MLA request sent", "name=\"follow_up.extend_until\""] {
        assert!(page.body.contains(words), "{words}: {}", page.body);
    }
    let token = page.token();
    let extend = format!("/message/{id}/extend");
    let mla_sent = format!("/message/{id}/mla-sent");
    let stored_at = async |vn: &mut DeskClient, fr: &mut DeskClient| {
        let (vn_case, vn_replies) = case(vn, &id).await;
        let (fr_case, fr_replies) = case(fr, &id).await;
        (
            outbox(vn).await.len(),
            vn_replies.len(),
            fr_replies.len(),
            [vn_case.mla_reference, fr_case.mla_reference],
            [vn_case.preserved_until, fr_case.preserved_until],
        )
    };
    let before = stored_at(&mut vn, &mut fr).await;

    // Bad input: shown on the page naming the field (422); nothing stored at either end.
    let (earlier, _) = day_in(30);
    let refusals = [
        (&extend, vec![("follow_up.extend_until", "")], "follow_up.extend_until: required"),
        (&extend, vec![("follow_up.extend_until", d.as_str())], "follow_up.extend_until: must be later than"),
        (
            &extend,
            vec![("follow_up.extend_until", earlier.as_str())],
            "follow_up.extend_until: must be later",
        ),
        (&extend, vec![("follow_up.extend_until", "soon")], "follow_up.extend_until: not a date"),
        (&extend, vec![], "follow_up.extend_until: required"),
        (&mla_sent, vec![("follow_up.mla_reference", "")], "follow_up.mla_reference: required"),
        (&mla_sent, vec![("follow_up.mla_reference", "   ")], "follow_up.mla_reference: required"),
        (&mla_sent, vec![("follow_up.mla_reference", "MLA\u{7}1")], "follow_up.mla_reference: U+0007"),
    ];
    for (action, fields, words) in refusals {
        let mut form = vec![("csrf", token.as_str()), ("text", "note")];
        form.extend(fields);
        let refused = fetch(Arc::clone(&officer), port, action, Some(&urlencode(&form))).await;
        assert_eq!(refused.status, 422, "{action} {form:?}: {}", refused.body);
        assert!(refused.body.contains(words), "{words}: {}", refused.body);
        assert!(refused.body.contains("class=\"refusal\""), "{}", refused.body);
        assert_eq!(stored_at(&mut vn, &mut fr).await, before, "{action} {form:?}: nothing stored");
    }

    // Without the form token, and by roles that may not submit: refused, nothing stored.
    let (d2, d2_time) = day_in(150);
    let good_extension = |token: &str| urlencode(&[("csrf", token), ("follow_up.extend_until", &d2)]);
    let no_token = urlencode(&[("follow_up.extend_until", &d2)]);
    assert_eq!(fetch(Arc::clone(&officer), port, &extend, Some(&no_token)).await.status, 403);
    let operator_page = fetch(browser(&net, "VN", "operator"), port, &path, None).await;
    assert!(!operator_page.body.contains("/extend\""), "the operator is offered the form");
    for name in ["audit", "operator"] {
        let other = browser(&net, "VN", name);
        let own_token = fetch(Arc::clone(&other), port, "/inbox", None).await.token();
        let refused = fetch(other, port, &extend, Some(&good_extension(&own_token))).await;
        assert_eq!(refused.status, 403, "{name}: {}", refused.body);
        assert!(refused.body.contains("may not call Submit"), "{name}: {}", refused.body);
    }
    assert_eq!(stored_at(&mut vn, &mut fr).await, before, "nothing stored");

    // At FR, the preservation FR received is not one FR sent: no form, and the post is refused.
    let fr_port = console_port(&net, "FR");
    let fr_officer = browser(&net, "FR", "officer");
    let fr_page = fetch(Arc::clone(&fr_officer), fr_port, &path, None).await;
    assert!(!fr_page.body.contains("/mla-sent\""), "{}", fr_page.body);
    let form = urlencode(&[("csrf", &fr_page.token()), ("follow_up.mla_reference", "MLA-1")]);
    let refused = fetch(Arc::clone(&fr_officer), fr_port, &mla_sent, Some(&form)).await;
    assert_eq!(refused.status, 409, "{}", refused.body);
    assert!(refused.body.contains("is not a preservation request this node sent"), "{}", refused.body);
    assert_eq!(stored_at(&mut vn, &mut fr).await, before, "nothing stored");

    // The command line builds the same request and refuses the same: `extend` to D names --until.
    let config = net.client_config_path_of("VN", "officer");
    let cli = std::process::Command::new(env!("CARGO_BIN_EXE_hanoi247"))
        .args(["extend", &id, "--until", &d, "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(cli.status.code(), Some(2), "a usage error");
    let said = String::from_utf8_lossy(&cli.stderr);
    assert!(said.contains("--until: must be later than"), "{said}");
    assert_eq!(stored_at(&mut vn, &mut fr).await, before, "nothing stored");

    // "Ask for an extension" until D2: back on the case's page; FR receives the extension.
    let asked = fetch(Arc::clone(&officer), port, &extend, Some(&good_extension(&token))).await;
    assert_eq!(asked.status, 303, "{}", asked.body);
    assert_eq!(asked.header("location"), Some(path.as_str()));
    let extension_at = async |desk: &mut DeskClient| {
        let (_, replies) = case(desk, &id).await;
        replies.into_iter().find(|r| {
            r.envelope.as_ref().and_then(|e| e.follow_up.as_ref()).is_some_and(|f| f.extend_until.is_some())
        })
    };
    let mut extension = None;
    eventually("FR receives the extension", async || {
        extension = extension_at(&mut fr).await;
        extension.is_some()
    })
    .await;
    let extension = extension.unwrap().envelope.unwrap();
    assert_eq!(extension.follow_up.unwrap().extend_until, Some(d2_time));
    assert_eq!((extension.in_reply_to.as_str(), extension.origin.as_str()), (id.as_str(), "VN"));
    assert!(extension.subject.starts_with("Extension of the preservation until"), "{}", extension.subject);
    let at_fr = fetch(Arc::clone(&fr_officer), fr_port, &format!("/message/{}", extension.id), None).await;
    let asked_until = format!(
        "<dt>follow_up.extend_until</dt><dd><span class=\"extend-until\"><time datetime=\"{}\"",
        timestamp::rfc3339(&d2_time)
    );
    assert!(at_fr.body.contains(&asked_until), "FR's page shows the date asked: {}", at_fr.body);

    // FR extends to D2: asking for D2 again is not later than the date now, and is refused.
    executed(&mut fr, &extension.id, d2_time).await;
    get_until(&mut vn, &id, "VN records D2", |m| m.preserved_until == Some(d2_time)).await;
    let before = stored_at(&mut vn, &mut fr).await;
    let again = fetch(Arc::clone(&officer), port, &extend, Some(&good_extension(&token))).await;
    assert_eq!(again.status, 422, "{}", again.body);
    assert!(again.body.contains("follow_up.extend_until: must be later than"), "{}", again.body);
    assert_eq!(stored_at(&mut vn, &mut fr).await, before, "nothing stored");

    // "MLA request sent": recorded on the preservation at both ends, shown on both pages.
    let form =
        urlencode(&[("csrf", &token), ("follow_up.mla_reference", "MLA-2027-0042"), ("text", "filed")]);
    let sent = fetch(Arc::clone(&officer), port, &mla_sent, Some(&form)).await;
    assert_eq!(sent.status, 303, "{}", sent.body);
    get_until(&mut vn, &id, "VN records the reference", |m| m.mla_reference == "MLA-2027-0042").await;
    get_until(&mut fr, &id, "FR records the reference", |m| m.mla_reference == "MLA-2027-0042").await;
    for (config, port) in [(officer, port), (fr_officer, fr_port)] {
        let page = fetch(config, port, &path, None).await;
        assert!(page.body.contains("MLA-2027-0042"), "{}", page.body);
    }
    net.stop("FR").await;
    net.stop("VN").await;
}
