//! Issue 17, conditions set by the one who answers: a response carries the handling code and
//! restrictions its responder chose (the request's are only the default), signed with it, at
//! both ends; a bad choice is refused naming the field and stores nothing.

use hanoi247::proto::{GetRequest, HandlingCode, MessageState, RespondRequest, SubmitRequest};

use crate::support::*;

/// The response VN holds for its request `id`.
async fn response_at_vn(net: &Network, id: &str) -> hanoi247::proto::Envelope {
    let mut vn = net.desk("VN");
    wait_state(&mut vn, id, MessageState::Answered).await;
    let replies = vn.get(GetRequest { id: id.into() }).await.unwrap().into_inner().replies;
    let kinds = |e: &hanoi247::proto::Envelope| e.kind() == hanoi247::proto::EnvelopeKind::Response;
    replies.into_iter().filter_map(|r| r.envelope).find(kinds).expect("the response")
}

fn restricted_request() -> SubmitRequest {
    SubmitRequest {
        handling_code: HandlingCode::H2 as i32,
        handling_restrictions: "law enforcement only".into(),
        ..preservation_request("FR")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_answering_state_sets_the_conditions_on_its_answer_and_the_requests_are_the_default() {
    let mut net = Network::new(&["VN", "FR"]).await;
    net.start("VN").await;
    net.start("FR").await;
    let mut vn = net.desk("VN");
    let (own, default) =
        (submit(&mut vn, restricted_request()).await, submit(&mut vn, restricted_request()).await);
    let mut fr = net.desk("FR");
    for id in [&own, &default] {
        wait_state(&mut fr, id, MessageState::Received).await;
    }
    let restrictions = "Only for the prosecutor of case 2026/117; no onward transfer";
    let answer = RespondRequest {
        id: own.clone(),
        text: "preserved".into(),
        handling_code: HandlingCode::H3 as i32,
        handling_restrictions: restrictions.into(),
        outcome: None,
    };
    fr.respond(answer).await.unwrap();
    fr.respond(RespondRequest { id: default.clone(), text: "preserved".into(), ..Default::default() })
        .await
        .unwrap();

    let chosen = response_at_vn(&net, &own).await;
    assert_eq!(
        (chosen.handling_code(), chosen.handling_restrictions.as_str()),
        (HandlingCode::H3, restrictions)
    );
    let inherited = response_at_vn(&net, &default).await;
    assert_eq!(inherited.handling_code(), HandlingCode::H2);
    assert_eq!(inherited.handling_restrictions, "law enforcement only");
    // FR's own copy says the same (it signed what it sent).
    let at_fr = fr.get(GetRequest { id: own }).await.unwrap().into_inner().replies;
    assert!(at_fr.iter().filter_map(|r| r.envelope.as_ref()).any(|e| e.handling_code() == HandlingCode::H3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_condition_is_refused_naming_the_field_and_nothing_is_answered() {
    let mut net = Network::new(&["VN", "FR"]).await;
    net.start("VN").await;
    net.start("FR").await;
    let id = submit(&mut net.desk("VN"), restricted_request()).await;
    let mut fr = net.desk("FR");
    wait_state(&mut fr, &id, MessageState::Received).await;
    let outbox_before = outbox(&mut fr).await.len();
    let with = |code: i32, restrictions: &str| RespondRequest {
        id: id.clone(),
        text: "preserved".into(),
        handling_code: code,
        handling_restrictions: restrictions.into(),
        outcome: None,
    };
    for (request, field, words) in [
        (with(HandlingCode::H3 as i32, " "), "handling_restrictions", "required when handling_code is H3"),
        (with(0, "no onward transfer"), "handling_restrictions", "without handling_code"),
        (with(99, ""), "handling_code", "99 is not a handling code"),
        (with(HandlingCode::H3 as i32, "bell\u{7}"), "handling_restrictions", ""),
    ] {
        let status = fr.respond(request).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(status.message().starts_with(&format!("{field}:")), "{status:?}");
        assert!(status.message().contains(words), "{status:?}");
    }
    let request = fr.get(GetRequest { id: id.clone() }).await.unwrap().into_inner();
    assert_eq!(request.message.unwrap().state(), MessageState::Received, "nothing answered");
    assert_eq!(outbox(&mut fr).await.len(), outbox_before, "nothing queued");

    // The CLI sets them with --handling and --restrictions.
    let config = net.client_config_path("FR");
    let answered = std::process::Command::new(env!("CARGO_BIN_EXE_hanoi247"))
        .args(["respond", &id, "--config", config.to_str().unwrap(), "--text", "preserved"])
        .args(["--handling", "h1"])
        .output()
        .unwrap();
    assert!(answered.status.success(), "{}", String::from_utf8_lossy(&answered.stderr));
    assert_eq!(response_at_vn(&net, &id).await.handling_code(), HandlingCode::H1);
}
