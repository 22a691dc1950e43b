//! `hanoi247 demo`: a temporary network of VN, FR and DE in one process on loopback (real TLS,
//! real sled in a temporary directory, ports from the OS) telling one request's story.

use std::path::Path;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;

use crate::cli::desk_client::{self, DeskClient, wait_for_state};
use crate::cli::init::{InitOptions, NodePlan, init_network};
use crate::config::{ClientConfig, NodeConfig};
use crate::domain::identity::NodeCode;
use crate::node::RunningNode;
use crate::proto::{
    AcknowledgeRequest, GetRequest, HandlingCode, ListInboxRequest, MessageState, Precedence,
    PreservationRequest, RequestType, RespondRequest, SubmitRequest,
};

/// How long any one step may take before the demo fails.
const STEP_DEADLINE: Duration = Duration::from_secs(30);

/// A step of the demo failed.
#[derive(Debug, thiserror::Error)]
#[error("demo failed: {0}")]
pub struct DemoError(String);

fn fail(error: impl std::fmt::Display) -> DemoError {
    DemoError(error.to_string())
}

struct Story {
    start: Instant,
}

impl Story {
    fn say(&self, text: impl AsRef<str>) {
        let now = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
        println!("[{} +{:>6.3}s] {}", &now[11..23], self.start.elapsed().as_secs_f64(), text.as_ref());
    }
}

async fn listener() -> Result<TcpListener, DemoError> {
    TcpListener::bind("127.0.0.1:0").await.map_err(fail)
}

/// A node config for the demo: shorter retries so the story does not wait a minute.
fn demo_config(path: &Path) -> Result<NodeConfig, DemoError> {
    let mut config = NodeConfig::load(path).map_err(fail)?;
    config.delivery.retry_initial = Duration::from_millis(200);
    config.delivery.retry_max = Duration::from_secs(1);
    Ok(config)
}

fn code(text: &str) -> NodeCode {
    // The demo's codes are literals known to be valid.
    text.parse().unwrap_or_else(|_| unreachable!("valid node code literal"))
}

/// Runs the demo.
pub async fn run() -> Result<(), DemoError> {
    let story = Story { start: Instant::now() };
    let dir = tempfile::tempdir().map_err(fail)?;
    let (vn, fr, de) = (code("VN"), code("FR"), code("DE"));
    let mut listeners = Vec::new();
    let mut nodes = Vec::new();
    for node in [vn, fr, de] {
        let (peer, desk) = (listener().await?, listener().await?);
        let port = |l: &TcpListener| l.local_addr().map(|a| a.port()).map_err(fail);
        // Metrics and console on ports the OS picks when the node starts.
        nodes.push(NodePlan {
            code: node,
            peer_port: port(&peer)?,
            desk_port: port(&desk)?,
            metrics_port: 0,
            console_port: 0,
        });
        listeners.push((peer, desk));
    }
    let options = InitOptions {
        out: dir.path().to_owned(),
        network: "hanoi247-demo".into(),
        nodes,
        clients: Vec::new(),
    };
    let report = init_network(&options).map_err(fail)?;
    story.say(format!("network CA and certificates for VN, FR and DE made in {}", dir.path().display()));

    let mut running = Vec::new();
    for ((node, path), (peer, desk)) in report.node_configs.iter().zip(listeners) {
        let started = RunningNode::start_on(demo_config(path)?, peer, desk).await.map_err(fail)?;
        story.say(format!("{node} node up: peer listener {}, desk {}", started.peer_addr, started.desk_addr));
        running.push(started);
    }
    let desk = |node: NodeCode| -> Result<DeskClient, DemoError> {
        let path = report.client_config(node).ok_or_else(|| fail(format!("no client for {node}")))?;
        desk_client::connect(&ClientConfig::load(path).map_err(fail)?).map_err(fail)
    };
    let (mut vn_desk, mut fr_desk) = (desk(vn)?, desk(fr)?);

    // 1. VN asks FR to preserve data, FLASH.
    let submitted = vn_desk
        .submit(SubmitRequest {
            destination: "FR".into(),
            request_type: RequestType::Preservation as i32,
            precedence: Precedence::Flash as i32,
            subject: "Preserve mailbox of phishing suspect before deletion".into(),
            body: "Account closure announced for tomorrow; please preserve now.".into(),
            handling_code: HandlingCode::H0 as i32,
            preservation: Some(PreservationRequest {
                requesting_authority: "Ministry of Public Security, Department A05".into(),
                offence: "Fraud by phishing (Art. 290 Penal Code)".into(),
                facts: "Bank customers lured to a fake site; credentials used for transfers.".into(),
                data_to_preserve: "Mailbox contents, subscriber data and login IP logs of the account".into(),
                link_to_offence: "The account sent the phishing e-mails".into(),
                custodian_or_location: "Mail provider in France, account suspect@example.fr".into(),
                necessity: "The provider deletes closed accounts after 24 hours".into(),
                mutual_legal_assistance_to_follow: true,
                preservation_days: 90,
            }),
            ..Default::default()
        })
        .await
        .map_err(fail)?
        .into_inner()
        .message
        .unwrap_or_default();
    let envelope = submitted.envelope.clone().unwrap_or_default();
    let id = envelope.id.clone();
    story.say(format!(
        "VN submits a FLASH preservation request to FR: {id} (case {}), stored and QUEUED",
        envelope.case_reference
    ));

    let delivered =
        wait_for_state(&mut vn_desk, &id, MessageState::Delivered, STEP_DEADLINE).await.map_err(fail)?;
    let received_at =
        delivered.received_at.as_ref().map(crate::domain::timestamp::rfc3339).unwrap_or_default();
    story.say(format!("FR's receipt: stored on FR's disk at {received_at}; VN shows DELIVERED"));
    let proof =
        vn_desk.get_proof(crate::proto::GetProofRequest { id: id.clone() }).await.map_err(fail)?.into_inner();
    let proof = serde_json::to_string(&crate::trust::proof::build(&proof).map_err(fail)?).map_err(fail)?;
    crate::trust::proof::verify(&proof, None).map_err(fail)?;
    story.say("VN keeps the proof: its signature on the envelope and FR's signed receipt verify (show --proof, verify)");

    let inbox = fr_desk
        .list_inbox(ListInboxRequest { limit: 10, ..Default::default() })
        .await
        .map_err(fail)?
        .into_inner()
        .messages;
    if !inbox.iter().any(|m| m.envelope.as_ref().is_some_and(|e| e.id == id)) {
        return Err(fail("the request is not in FR's inbox"));
    }
    story.say("FR's duty officer sees it in the inbox (RECEIVED) and acknowledges it");
    fr_desk
        .acknowledge(AcknowledgeRequest { id: id.clone(), note: "Taken by the FR duty officer".into() })
        .await
        .map_err(fail)?;
    wait_for_state(&mut vn_desk, &id, MessageState::Acknowledged, STEP_DEADLINE).await.map_err(fail)?;
    story.say("VN shows ACKNOWLEDGED");

    fr_desk
        .respond(RespondRequest {
            id: id.clone(),
            text: "Data preserved for 90 days under reference FR-PRES-2026-117. Send the MLA request to the Ministry of Justice.".into(),
            ..Default::default()
        })
        .await
        .map_err(fail)?;
    story.say("FR answers: the data is preserved for 90 days");
    let answered =
        wait_for_state(&mut vn_desk, &id, MessageState::Answered, STEP_DEADLINE).await.map_err(fail)?;
    story.say("VN shows ANSWERED; its timeline:");
    for entry in &answered.timeline {
        println!(
            "      {}  {:<13} {}",
            entry.at.as_ref().map(crate::domain::timestamp::rfc3339).unwrap_or_default(),
            crate::domain::lifecycle::state_name(entry.state()),
            entry.note
        );
    }

    // 2. DE is down; VN's request waits and is delivered when DE is back.
    let de_node = running.pop().ok_or_else(|| fail("DE is not running"))?;
    let mut de_config = de_node.context.config.clone();
    de_config.metrics.listen = de_node.metrics_addr;
    let (de_peer, de_desk) = (de_node.peer_addr, de_node.desk_addr);
    de_node.shutdown().await.map_err(fail)?;
    story.say("DE is stopped");
    let waiting = vn_desk
        .submit(SubmitRequest {
            destination: "DE".into(),
            request_type: RequestType::TrafficDataDisclosure as i32,
            precedence: Precedence::Immediate as i32,
            subject: "Traffic data for IP 198.51.100.7 on 2026-11-24 21:00-22:00 UTC".into(),
            handling_code: HandlingCode::H0 as i32,
            ..Default::default()
        })
        .await
        .map_err(fail)?
        .into_inner()
        .message
        .unwrap_or_default();
    let de_id = waiting.envelope.map(|e| e.id).unwrap_or_default();
    story.say(format!("VN submits an IMMEDIATE request to DE: {de_id}"));
    let retrying = wait_for_state(&mut vn_desk, &de_id, MessageState::WaitingRetry, STEP_DEADLINE)
        .await
        .map_err(fail)?;
    story.say(format!(
        "VN shows WAITING_RETRY after {} attempt(s); last error: {}",
        retrying.attempts, retrying.last_error
    ));

    let (peer, desk_listener) =
        (TcpListener::bind(de_peer).await.map_err(fail)?, TcpListener::bind(de_desk).await.map_err(fail)?);
    running.push(RunningNode::start_on(de_config, peer, desk_listener).await.map_err(fail)?);
    story.say("DE is back");
    let delivered =
        wait_for_state(&mut vn_desk, &de_id, MessageState::Delivered, STEP_DEADLINE).await.map_err(fail)?;
    story
        .say(format!("VN shows DELIVERED after {} failed attempt(s); DE stored it once", delivered.attempts));
    let mut de_desk_client = desk(de)?;
    let on_de = de_desk_client.get(GetRequest { id: de_id.clone() }).await.map_err(fail)?.into_inner();
    if on_de.message.is_none() {
        return Err(fail("DE does not have the request"));
    }

    for node in running {
        node.shutdown().await.map_err(fail)?;
    }
    story.say("all nodes stopped cleanly; demo complete");
    Ok(())
}
