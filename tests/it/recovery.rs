//! Issue 19, acceptance 1 and 2 (recovery from peers): a node rebuilt from an older backup gets
//! back from its peers what it exchanged since, checked as `Deliver` checks it; a peer gives a
//! node only that node's exchanges; a forged or altered envelope in an answer is refused and
//! named.

use std::collections::BTreeMap;

use hanoi247::domain::access::Role;
use hanoi247::proto::{
    AcknowledgeRequest, CancelRequest, ConnectionState, GetQueueRequest, ListAuditRequest, ListPeersRequest,
    MessageState, Precedence, RecoverRequest, RespondRequest,
};
use hanoi247::store::Store;
use hanoi247::store_proto::StoredMessage;
use prost::Message as _;
use tokio_stream::StreamExt;

use crate::backup::{hanoi247, text};
use crate::support::*;

/// What must come back of a message: direction, state, the envelope as signed, the receipt and
/// the certificate that signed it (a proof is made of these).
type Kept = (i32, i32, Vec<u8>, Option<Vec<u8>>, Vec<u8>);

fn kept(stored: &StoredMessage) -> Kept {
    let message = stored.message.clone().unwrap();
    let receipt = stored.receipt.clone().map(|r| hanoi247::proto::Receipt { duplicate: false, ..r });
    (
        message.direction,
        message.state,
        message.envelope.unwrap().encode_to_vec(),
        receipt.map(|r| r.encode_to_vec()),
        stored.origin_certificate.clone(),
    )
}

/// Every message of `node`'s store (stopped) exchanged with `peers`, by id.
fn snapshot(net: &Network, node: &str, peers: &[&str]) -> BTreeMap<String, Kept> {
    let store = Store::open(&net.config(node).data_dir).unwrap();
    let mut all = BTreeMap::new();
    for peer in peers {
        for stored in store.exchanged_with(code(peer), |_| true).unwrap() {
            let id = stored.message.as_ref().unwrap().envelope.as_ref().unwrap().id.clone();
            assert!(all.insert(id.clone(), kept(&stored)).is_none(), "{id} twice");
        }
    }
    all
}

/// How many `action` records `node`'s audit log holds (read by its auditor).
async fn audit_count(net: &Network, node: &str, action: &str) -> usize {
    let mut desk = net.desk_as(node, "audit");
    let mut stream = desk.list_audit(ListAuditRequest::default()).await.unwrap().into_inner();
    let mut count = 0;
    while let Some(record) = tokio::time::timeout(DEADLINE, stream.next()).await.unwrap() {
        count += usize::from(record.unwrap().action == action);
    }
    count
}

/// Waits until `node` has nothing waiting for any peer (every receipt recorded).
async fn settled(net: &Network, node: &str) {
    let mut operator = net.desk_as(node, "operator");
    eventually(&format!("{node}'s queues are empty"), async || {
        let queues = operator.get_queue(GetQueueRequest {}).await.unwrap().into_inner().peers;
        queues.iter().all(|q| q.flash + q.immediate + q.priority + q.routine == 0)
    })
    .await;
}

fn clients(nodes: &[&'static str]) -> Vec<(&'static str, &'static str, Role)> {
    let mut clients = Vec::new();
    for node in nodes {
        clients.push((*node, "officer", Role::Officer));
        clients.push((*node, "operator", Role::Operator));
        clients.push((*node, "audit", Role::Auditor));
    }
    clients
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restored_from_an_old_backup_gets_back_from_its_peers_all_they_exchanged() {
    let mut net = Network::with_clients(&["VN", "FR", "DE"], &clients(&["VN", "FR", "DE"])).await;
    for node in ["VN", "FR", "DE"] {
        net.start(node).await;
    }
    let (mut vn, mut fr, mut de) = (net.desk("VN"), net.desk("FR"), net.desk("DE"));

    // Before the backup: VN's request answered by FR, FR's acknowledged by DE, DE's received.
    let a = submit(&mut vn, preservation_request("FR")).await;
    wait_state(&mut fr, &a, MessageState::Received).await;
    fr.respond(RespondRequest { id: a.clone(), text: "preserved".into(), ..Default::default() })
        .await
        .unwrap();
    wait_state(&mut vn, &a, MessageState::Answered).await;
    let b = submit(&mut fr, advice_request("DE", Precedence::Immediate, "b")).await;
    wait_state(&mut de, &b, MessageState::Received).await;
    de.acknowledge(AcknowledgeRequest { id: b.clone(), note: "taken".into() }).await.unwrap();
    wait_state(&mut fr, &b, MessageState::Acknowledged).await;
    let c = submit(&mut de, advice_request("FR", Precedence::Routine, "c")).await;
    wait_state(&mut fr, &c, MessageState::Received).await;
    // Queued in the backup (VN is down then), delivered after it.
    net.stop("VN").await;
    let q = submit(&mut fr, advice_request("VN", Precedence::Routine, "q")).await;

    let file = net.dir().join("fr.backup");
    let operator = net.client_config_path_of("FR", "operator");
    let output = hanoi247(vec![
        "backup".into(),
        "--config".into(),
        operator.display().to_string(),
        "--out".into(),
        file.display().to_string(),
    ])
    .await;
    assert!(output.status.success(), "{}", text(&output));
    net.start("VN").await;
    let mut vn = net.desk("VN");
    wait_state(&mut fr, &q, MessageState::Delivered).await;

    // After the backup: requests both ways, acknowledgements, answers, a cancellation.
    let d = submit(&mut vn, advice_request("FR", Precedence::Flash, "d")).await;
    wait_state(&mut fr, &d, MessageState::Received).await;
    fr.acknowledge(AcknowledgeRequest { id: d.clone(), note: "on it".into() }).await.unwrap();
    wait_state(&mut vn, &d, MessageState::Acknowledged).await;
    let e = submit(&mut fr, advice_request("VN", Precedence::Priority, "e")).await;
    wait_state(&mut vn, &e, MessageState::Received).await;
    vn.respond(RespondRequest { id: e.clone(), text: "here".into(), ..Default::default() }).await.unwrap();
    wait_state(&mut fr, &e, MessageState::Answered).await;
    fr.respond(RespondRequest { id: c.clone(), text: "answer to c".into(), ..Default::default() })
        .await
        .unwrap();
    wait_state(&mut de, &c, MessageState::Answered).await;
    let f = submit(&mut de, advice_request("FR", Precedence::Routine, "f")).await;
    wait_state(&mut fr, &f, MessageState::Received).await;
    let g = submit(&mut fr, advice_request("DE", Precedence::Routine, "g")).await;
    wait_state(&mut de, &g, MessageState::Received).await;
    // (Cancelled before FR recorded DE's receipt, it would count as never sent: no cancellation.)
    wait_state(&mut fr, &g, MessageState::Delivered).await;
    net.desk_as("FR", "operator")
        .cancel(CancelRequest { id: g.clone(), reason: "sent in error".into() })
        .await
        .unwrap();
    wait_state(&mut de, &g, MessageState::Cancelled).await;

    for node in ["VN", "FR", "DE"] {
        settled(&net, node).await;
    }
    // FR restarts: its Hello gives VN and DE its audit head, now well past the backup's.
    net.stop("FR").await;
    net.start("FR").await;
    let mut operator = net.desk_as("FR", "operator");
    eventually("FR said Hello to VN and DE", async || {
        let peers = operator.list_peers(ListPeersRequest {}).await.unwrap().into_inner();
        let connected = |p: &&hanoi247::proto::PeerInfo| p.connection() == ConnectionState::Connected;
        peers.peers.iter().filter(connected).count() == 2
    })
    .await;
    // A request still queued when the machine is lost (VN is down): it cannot come back.
    net.stop("VN").await;
    let h = submit(&mut fr, advice_request("VN", Precedence::Routine, "h")).await;
    for node in ["FR", "DE"] {
        net.stop(node).await;
    }
    let fr_before = snapshot(&net, "FR", &["VN", "DE"]);
    let vn_before = snapshot(&net, "VN", &["FR", "DE"]);
    let de_before = snapshot(&net, "DE", &["VN", "FR"]);
    for id in [&a, &b, &c, &d, &e, &f, &g, &h, &q] {
        assert!(fr_before.contains_key(id), "{id} at FR before the loss");
    }
    let waiting = [MessageState::Queued as i32, MessageState::WaitingRetry as i32];
    let queued = fr_before.iter().filter(|(_, k)| waiting.contains(&k.1)).count();
    assert_eq!(queued, 1, "only h waits at FR: every reply was delivered");

    // FR's machine is lost; FR is restored from the backup and asks its peers.
    std::fs::remove_dir_all(net.config("FR").data_dir).unwrap();
    let config = net.config_path("FR");
    let output = hanoi247(vec![
        "restore".into(),
        "--in".into(),
        file.display().to_string(),
        "--config".into(),
        config.display().to_string(),
        "--recover-from-peers".into(),
        "--json".into(),
    ])
    .await;
    assert!(output.status.success(), "{}", text(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let lost = report["not_recoverable"].as_array().unwrap_or_else(|| panic!("{report}"));
    assert!(lost[0].as_str().unwrap().contains("still queued when the machine was lost"), "{report}");
    assert!(lost.iter().any(|l| l.as_str().unwrap().contains("audit records and events")), "{report}");

    // VN is up, DE is still down: FR recovers from VN and retries DE until it answers.
    net.start("VN").await;
    net.start("FR").await;
    eventually("FR recovered from VN", async || audit_count(&net, "FR", "RECOVERED_FROM_PEER").await == 1)
        .await;
    let mut operator = net.desk_as("FR", "operator");
    eventually("FR shows DE failing while it retries", async || {
        let peers = operator.list_peers(ListPeersRequest {}).await.unwrap().into_inner();
        peers.peers.iter().any(|p| p.peer == "DE" && !p.last_error.is_empty())
    })
    .await;
    net.start("DE").await;
    eventually("FR recovered from DE", async || audit_count(&net, "FR", "RECOVERED_FROM_PEER").await == 2)
        .await;
    for node in ["VN", "DE"] {
        assert_eq!(
            audit_count(&net, node, "PEER_RESTORED_FROM_BACKUP").await,
            1,
            "{node} witnessed the restart"
        );
    }
    let vn_metrics = net.config("VN").metrics.listen.port();
    let rollbacks = tokio::task::spawn_blocking(move || {
        crate::operator_view::metric(vn_metrics, "hanoi247_audit_head_rollbacks_total{peer=\"FR\"}")
    })
    .await
    .unwrap();
    assert!(rollbacks.is_none_or(|n| n == 0.0), "an announced restart is no rollback: {rollbacks:?}");
    let restarts = tokio::task::spawn_blocking(move || {
        crate::operator_view::metric(vn_metrics, "hanoi247_audit_head_restarts_total{peer=\"FR\"}")
    })
    .await
    .unwrap();
    assert_eq!(restarts, Some(1.0), "the restart is counted");
    // Every listing holds each message once.
    let mut fr = net.desk("FR");
    for listed in [ids(&inbox(&mut fr).await), ids(&outbox(&mut fr).await)] {
        let unique: std::collections::HashSet<_> = listed.iter().collect();
        assert_eq!(unique.len(), listed.len(), "a message listed twice: {listed:?}");
        assert!(!listed.is_empty());
    }
    // q, queued in the backup, became DELIVERED from VN's receipt instead of being sent again.
    let duplicates = tokio::task::spawn_blocking(move || {
        crate::operator_view::metric(vn_metrics, "hanoi247_duplicates_received_total{peer=\"FR\"}")
    })
    .await
    .unwrap();
    assert!(duplicates.is_none_or(|n| n == 0.0), "nothing sent again: {duplicates:?}");
    for node in ["VN", "FR", "DE"] {
        net.stop(node).await;
    }

    // FR holds exactly what it held before the loss, minus h; VN and DE are unchanged.
    let compare = |net: &Network| {
        let mut fr_after = snapshot(net, "FR", &["VN", "DE"]);
        let mut expected = fr_before.clone();
        expected.remove(&h);
        for (id, before) in &expected {
            let after = fr_after.remove(id).unwrap_or_else(|| panic!("{id} did not come back"));
            assert_eq!(&after, before, "{id} came back as it was");
        }
        assert!(fr_after.is_empty(), "nothing more: {:?}", fr_after.keys());
        assert_eq!(snapshot(net, "VN", &["FR", "DE"]), vn_before, "VN unchanged");
        assert_eq!(snapshot(net, "DE", &["VN", "FR"]), de_before, "DE unchanged");
    };
    compare(&net);

    // Recovering again changes nothing.
    let data_dir = net.config("FR").data_dir;
    hanoi247::cli::ask_recovery(
        &data_dir,
        std::time::SystemTime::now() - std::time::Duration::from_secs(3600),
    )
    .await
    .unwrap();
    for node in ["VN", "DE", "FR"] {
        net.start(node).await;
    }
    eventually("FR recovered again", async || audit_count(&net, "FR", "RECOVERED_FROM_PEER").await == 4)
        .await;
    for node in ["VN", "DE"] {
        let restarts = audit_count(&net, node, "PEER_RESTORED_FROM_BACKUP").await;
        assert_eq!(restarts, 1, "{node}: asked again with a longer log is no restart");
    }
    for node in ["VN", "FR", "DE"] {
        net.stop(node).await;
    }
    compare(&net);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_answers_only_the_callers_own_exchanges() {
    let mut net = Network::with_clients(&["VN", "FR", "DE"], &clients(&["VN", "FR", "DE"])).await;
    for node in ["VN", "FR", "DE"] {
        net.start(node).await;
    }
    let (mut vn, mut de) = (net.desk("VN"), net.desk("DE"));
    let mut fr = net.desk("FR");
    let from_vn = submit(&mut vn, advice_request("FR", Precedence::Routine, "vn")).await;
    let from_de = submit(&mut de, advice_request("FR", Precedence::Routine, "de")).await;
    wait_state(&mut fr, &from_vn, MessageState::Received).await;
    wait_state(&mut fr, &from_de, MessageState::Received).await;

    // VN asks FR for DE's exchanges: refused, naming the field; FR's audit log does not move.
    let mut client = net.peer_client("VN", "FR");
    let refused =
        client.recover(RecoverRequest { node: "DE".into(), ..Default::default() }).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().starts_with("node:") && refused.message().contains("'DE'"), "{refused:?}");
    // A head that is not VN's signature is refused naming it.
    let forged_head = hanoi247::proto::SignedAuditHead {
        node: "VN".into(),
        sequence: 1,
        hash: vec![0; 32],
        signature: vec![1, 2, 3],
        ..Default::default()
    };
    let refused = client
        .recover(RecoverRequest { node: "VN".into(), audit_head: Some(forged_head), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("audit head of VN"), "{refused:?}");

    // A time that is no time is refused naming it.
    let bad = RecoverRequest {
        node: "VN".into(),
        since: Some(prost_types::Timestamp { seconds: 0, nanos: 2_000_000_000 }),
        ..Default::default()
    };
    let refused = client.recover(bad).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("since"), "{refused:?}");
    // None of the refused calls left a trace at FR.
    assert_eq!(audit_count(&net, "FR", "RECOVERY_ANSWERED").await, 0);
    assert_eq!(audit_count(&net, "FR", "PEER_RESTORED_FROM_BACKUP").await, 0);

    // Asking for its own: only what VN and FR exchanged.
    let mut stream = client
        .recover(RecoverRequest { node: "VN".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let mut ids = Vec::new();
    while let Some(batch) = stream.message().await.unwrap() {
        for item in batch.envelopes {
            let envelope = item.envelope.unwrap();
            assert!(envelope.origin == "VN" || envelope.destination == "VN", "{envelope:?}");
            assert!(item.receipt.is_some());
            ids.push(envelope.id);
        }
    }
    assert_eq!(ids, vec![from_vn.clone()]);
    assert_eq!(audit_count(&net, "FR", "RECOVERY_ANSWERED").await, 1);
    for node in ["VN", "FR", "DE"] {
        net.stop(node).await;
    }
}

/// FR is restored from a backup made before VN sent it a request; someone with VN's files then
/// changes VN's copy (`alter`); FR's recovery from VN refuses it, naming the envelope and
/// `field`, stores nothing of it and keeps asking.
async fn altered_copy_is_refused(alter: fn(&mut StoredMessage), field: &str) {
    let mut net = Network::with_clients(&["VN", "FR"], &clients(&["VN", "FR"])).await;
    net.start("VN").await;
    net.start("FR").await;
    let file = net.dir().join("fr.backup");
    let operator = net.client_config_path_of("FR", "operator");
    let backup = vec![
        "backup".into(),
        "--config".into(),
        operator.display().to_string(),
        "--out".into(),
        file.display().to_string(),
    ];
    let output = hanoi247(backup).await;
    assert!(output.status.success(), "{}", text(&output));
    let (mut vn, mut fr) = (net.desk("VN"), net.desk("FR"));
    let sent = submit(&mut vn, advice_request("FR", Precedence::Routine, "the original subject")).await;
    wait_state(&mut fr, &sent, MessageState::Received).await;
    settled(&net, "VN").await;
    net.stop("VN").await;
    net.stop("FR").await;
    {
        let db = sled::open(net.config("VN").data_dir).unwrap();
        let mut key = vec![b'm'];
        key.extend_from_slice(uuid::Uuid::parse_str(&sent).unwrap().as_bytes());
        let mut stored = StoredMessage::decode(db.get(&key).unwrap().unwrap().as_ref()).unwrap();
        alter(&mut stored);
        db.insert(&key, stored.encode_to_vec()).unwrap();
        db.flush().unwrap();
    }
    std::fs::remove_dir_all(net.config("FR").data_dir).unwrap();
    let config = net.config_path("FR");
    let restore = vec![
        "restore".into(),
        "--in".into(),
        file.display().to_string(),
        "--config".into(),
        config.display().to_string(),
        "--recover-from-peers".into(),
    ];
    let output = hanoi247(restore).await;
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("cannot come back from peers"),
        "{}",
        text(&output)
    );
    net.start("VN").await;
    net.start("FR").await;

    let mut operator = net.desk_as("FR", "operator");
    let mut said = String::new();
    eventually("FR refuses the altered copy", async || {
        let peers = operator.list_peers(ListPeersRequest {}).await.unwrap().into_inner();
        said = peers.peers.iter().find(|p| p.peer == "VN").map(|p| p.last_error.clone()).unwrap_or_default();
        said.contains("refused")
    })
    .await;
    assert!(said.contains(&format!("recovery answer from VN: envelope {sent} refused: {field}")), "{said}");
    assert_eq!(audit_count(&net, "FR", "RECOVERED_FROM_PEER").await, 0);
    net.stop("VN").await;
    net.stop("FR").await;
    assert!(!snapshot(&net, "FR", &["VN"]).contains_key(&sent), "nothing of the answer was stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_altered_envelope_in_a_recovery_answer_is_refused_and_named() {
    let alter = |stored: &mut StoredMessage| {
        stored.message.as_mut().unwrap().envelope.as_mut().unwrap().subject = "an altered subject".into();
    };
    altered_copy_is_refused(alter, "origin_signature").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_receipt_in_a_recovery_answer_is_refused_and_named() {
    let alter = |stored: &mut StoredMessage| {
        let receipt = stored.receipt.as_mut().unwrap();
        receipt.received_at.as_mut().unwrap().seconds += 3600;
    };
    altered_copy_is_refused(alter, "receipt").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_node_recovers_on_command_showing_each_peer_until_all_answered() {
    let mut net = Network::with_clients(&["VN", "FR", "DE"], &clients(&["VN", "FR", "DE"])).await;
    net.start("VN").await;
    net.start("FR").await;
    let (mut vn, mut fr) = (net.desk("VN"), net.desk("FR"));
    let sent = submit(&mut vn, advice_request("FR", Precedence::Routine, "before")).await;
    wait_state(&mut fr, &sent, MessageState::Received).await;
    settled(&net, "VN").await;

    // Only operators; a `since` that is no time is refused naming it, and nothing is asked.
    let refused =
        fr.recover_from_peers(hanoi247::proto::RecoverFromPeersRequest::default()).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    let mut operator = net.desk_as("FR", "operator");
    // (A refused call is on the record too.)
    let recorded = audit_count(&net, "FR", "RecoverFromPeers").await;
    let bad = hanoi247::proto::RecoverFromPeersRequest {
        since: Some(prost_types::Timestamp { seconds: 0, nanos: -1 }),
    };
    let refused = operator.recover_from_peers(bad).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("since"), "{refused:?}");
    assert_eq!(audit_count(&net, "FR", "RecoverFromPeers").await, recorded, "nothing asked");

    // DE is down: the command shows VN done and DE retried until DE comes up.
    let config = net.client_config_path_of("FR", "operator");
    let command = tokio::spawn(hanoi247(vec![
        "recover".into(),
        "--config".into(),
        config.display().to_string(),
        "--json".into(),
    ]));
    eventually("FR recovered from VN", async || audit_count(&net, "FR", "RECOVERED_FROM_PEER").await == 1)
        .await;
    eventually("FR retries DE", async || {
        let peers = operator.list_peers(ListPeersRequest {}).await.unwrap().into_inner();
        peers.peers.iter().any(|p| p.peer == "DE" && p.last_error.contains("did not answer the recovery"))
    })
    .await;
    net.start("DE").await;
    let output = tokio::time::timeout(DEADLINE, command).await.unwrap().unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let peers = report["peers"].as_array().unwrap_or_else(|| panic!("{report}"));
    assert_eq!(peers.len(), 2, "{report}");
    assert!(peers.iter().all(|p| p["done"] == true), "{report}");
    let from_vn = peers.iter().find(|p| p["peer"] == "VN").unwrap();
    assert!(from_vn["result"].as_str().unwrap().contains("1 returned, 0 stored"), "{report}");
    assert_eq!(audit_count(&net, "FR", "RecoverFromPeers").await, recorded + 1);
    for node in ["VN", "FR", "DE"] {
        net.stop(node).await;
    }
}
