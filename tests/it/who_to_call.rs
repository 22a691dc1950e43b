//! Issue 17, "who to call": a peer's phone, time zone (with its local time now) and working
//! languages from the signed directory, in `ListPeers`, `hanoi247 peers`, the console's network
//! and message pages; `Submit` warns, without refusing, when a request's language is not one the
//! destination lists.

use std::str::FromStr as _;
use std::sync::Arc;

use hanoi247::domain::access::Role;
use hanoi247::proto::{ListPeersRequest, SubmitRequest};

use crate::console::{browser, console_port, fetch};
use crate::operator_view::cli_json;
use crate::support::*;

const PHONE: &str = "+33 1 00 00 00 00";

/// VN and FR, with FR's directory entry listing a phone, Paris time and French and English.
async fn network_with_a_listed_fr() -> Network {
    let clients = [
        ("VN", "officer", Role::Officer),
        ("VN", "operator", Role::Operator),
        ("VN", "police", Role::Agency),
        ("FR", "officer", Role::Officer),
    ];
    let mut net = Network::with_clients(&["VN", "FR"], &clients).await;
    net.edit_shared_directory(|directory| {
        let fr = directory.members.iter_mut().find(|m| m.code == code("FR")).unwrap();
        fr.phone = PHONE.into();
        fr.time_zone = "Europe/Paris".into();
        fr.languages = vec!["fr".into(), "en".into()];
    });
    net.start("VN").await;
    net
}

fn request_in(language: &str) -> SubmitRequest {
    SubmitRequest { language: language.into(), ..preservation_request("FR") }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_peers_and_the_cli_show_phone_local_time_and_languages() {
    let net = network_with_a_listed_fr().await;
    let mut desk = net.desk_as("VN", "operator");
    let peers = desk.list_peers(ListPeersRequest {}).await.unwrap().into_inner();
    let fr = peers.peers.iter().find(|p| p.peer == "FR").unwrap();
    assert_eq!(fr.phone, PHONE);
    assert_eq!(fr.time_zone, "Europe/Paris");
    assert_eq!(fr.languages, ["fr", "en"]);
    // The local time is now, in Paris: the instant within a minute, the offset Paris's today.
    let local = jiff::Zoned::from_str(&format!("{}[Europe/Paris]", fr.local_time))
        .unwrap_or_else(|e| panic!("local_time {:?}: {e}", fr.local_time));
    let paris_now = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::get("Europe/Paris").unwrap());
    assert_eq!(local.offset(), paris_now.offset(), "{}", fr.local_time);
    assert!((paris_now.timestamp().as_second() - local.timestamp().as_second()).abs() <= 60);

    let config = net.client_config_path_of("VN", "operator");
    let json = cli_json(&["--json", "peers", "--config", config.to_str().unwrap()]);
    let fr = json["peers"].as_array().unwrap().iter().find(|p| p["peer"] == "FR").unwrap();
    assert_eq!(fr["phone"], PHONE);
    assert_eq!(fr["time_zone"], "Europe/Paris");
    assert_eq!(fr["languages"], serde_json::json!(["fr", "en"]));
    assert!(fr["local_time"].as_str().is_some_and(|t| t.len() == 25), "{fr}");

    let text = std::process::Command::new(env!("CARGO_BIN_EXE_hanoi247"))
        .args(["peers", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains(&format!("call {PHONE} · ")), "{text}");
    assert!(text.contains("(Europe/Paris) · languages fr, en"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_a_language_the_peer_does_not_list_is_stored_with_a_warning() {
    let net = network_with_a_listed_fr().await;
    let mut desk = net.desk("VN");
    let warned = desk.submit(request_in("de")).await.unwrap().into_inner();
    assert_eq!(warned.warnings.len(), 1, "{:?}", warned.warnings);
    assert!(warned.warnings[0].starts_with("language: FR lists fr, en"), "{:?}", warned.warnings);
    let stored = warned.message.unwrap().envelope.unwrap().id;
    assert!(ids(&outbox(&mut desk).await).contains(&stored), "stored all the same");
    for suits in ["fr-FR", "EN", ""] {
        let answer = desk.submit(request_in(suits)).await.unwrap().into_inner();
        assert!(answer.warnings.is_empty(), "{suits}: {:?}", answer.warnings);
    }

    // The CLI says it on stderr, stores it, exits 0, and --json carries it.
    let config = net.client_config_path("VN");
    let sent = std::process::Command::new(env!("CARGO_BIN_EXE_hanoi247"))
        .args(["--json", "send", "--config", config.to_str().unwrap(), "--to", "FR"])
        .args(["--type", "technical-advice", "--precedence", "routine", "--subject", "Hallo"])
        .args(["--language", "de"])
        .output()
        .unwrap();
    assert!(sent.status.success(), "{}", String::from_utf8_lossy(&sent.stderr));
    let stderr = String::from_utf8_lossy(&sent.stderr);
    assert!(stderr.contains("warning: language: FR lists fr, en"), "{stderr}");
    let json: serde_json::Value = serde_json::from_slice(&sent.stdout).unwrap();
    assert_eq!(json["warnings"].as_array().map(Vec::len), Some(1), "{json}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_who_to_call_to_staff_and_not_to_agencies() {
    let net = network_with_a_listed_fr().await;
    let port = console_port(&net, "VN");
    let german = submit(&mut net.desk_as("VN", "police"), request_in("de")).await;

    let operator = browser(&net, "VN", "operator");
    let network = fetch(Arc::clone(&operator), port, "/network", None).await;
    assert_eq!(network.status, 200);
    assert!(network.body.contains("href=\"tel:+33100000000\""), "{}", network.body);
    assert!(network.body.contains("(Europe/Paris)"), "{}", network.body);
    assert!(network.body.contains("fr, en"), "{}", network.body);

    let officer = fetch(browser(&net, "VN", "officer"), port, &format!("/message/{german}"), None).await;
    assert_eq!(officer.status, 200);
    assert!(officer.body.contains("Who to call"), "{}", officer.body);
    assert!(officer.body.contains("href=\"tel:+33100000000\""), "{}", officer.body);
    assert!(officer.body.contains("not among the peer's working languages"), "{}", officer.body);

    let police = fetch(browser(&net, "VN", "police"), port, &format!("/message/{german}"), None).await;
    assert_eq!(police.status, 200);
    assert!(!police.body.contains("Who to call"), "agencies go through the desk: {}", police.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secretariat_cannot_list_a_time_zone_that_does_not_exist() {
    let net = Network::new(&["VN", "FR"]).await;
    let work = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_hanoi247"))
            .args(args)
            .current_dir(work.path())
            .output()
            .unwrap()
    };
    assert!(run(&["directory", "init", "--network", "hanoi247-test"]).status.success());
    let before = std::fs::read(work.path().join("directory.toml")).unwrap();
    let cert = net.config("FR").tls.cert;
    let cert = cert.to_str().unwrap();
    let add = |zone: &str| {
        let member = ["--code", "FR", "--name", "24/7 FR", "--endpoint", "fr.example:7247", "--cert", cert];
        run(&[&["directory", "add"][..], &member, &["--time-zone", zone]].concat())
    };
    let refused = add("Mars/Olympus_Mons");
    assert_eq!(refused.status.code(), Some(2), "a usage error");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("--time-zone: 'Mars/Olympus_Mons' is not an IANA time zone"), "{stderr}");
    assert_eq!(std::fs::read(work.path().join("directory.toml")).unwrap(), before, "nothing written");
    assert!(add("Europe/Paris").status.success());
}
