//! Feeds arbitrary bytes to what a node does with a peer's `Deliver` and a desk client's
//! `Submit`: protobuf decoding, validation, and storing into a real sled store as the peer
//! service does. A panic, or a store that loses or repeats what it accepted, is a finding.
//!
//! `cargo +nightly fuzz run deliver_decode` from the repository root (see README, Testing).

#![no_main]

use std::sync::{Mutex, OnceLock};

use hanoi247::config::NodeConfig;
use hanoi247::domain::identity::NodeCode;
use hanoi247::rpc::peer_service::receive_batch;
use hanoi247::proto::delivery_result::Outcome;
use hanoi247::proto::{DeliverRequest, Direction, Envelope, EnvelopeKind, SubmitRequest};
use hanoi247::store::{Listing, Store, view};
use hanoi247::domain::validation::check_envelope;
use libfuzzer_sys::fuzz_target;
use prost::Message as _;

/// One node (FR, receiving from VN), kept across inputs (opening sled per input would be slow)
/// and replaced by a fresh one now and then, so the store does not grow without end.
struct Node {
    config: NodeConfig,
    store: Store,
    inputs: u32,
    // Dropped after the store.
    _dir: tempfile::TempDir,
}

/// Inputs one store sees before it is replaced.
const INPUTS_PER_STORE: u32 = 10_000;

impl Node {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("node.toml");
        let text = "code = \"FR\"\nnetwork = \"hanoi247-fuzz\"\ndata_dir = \"data\"\n[tls]\n\
                    network_ca = \"ca.pem\"\ncert = \"node.pem\"\nkey = \"node.key\"\n\
                    local_ca = \"local-ca.pem\"\ndesk_cert = \"desk.pem\"\ndesk_key = \"desk.key\"\n\n\
                    [directory]\nfile = \"directory.toml\"\npublic_key = \"\
                    0000000000000000000000000000000000000000000000000000000000000000\"\n";
        std::fs::write(&path, text).expect("write config");
        let config = NodeConfig::load(&path).expect("config");
        let store = Store::open(&config.data_dir).expect("store");
        Self { config, store, inputs: 0, _dir: dir }
    }
}

fn node() -> &'static Mutex<Node> {
    static NODE: OnceLock<Mutex<Node>> = OnceLock::new();
    NODE.get_or_init(|| Mutex::new(Node::new()))
}

fuzz_target!(|data: &[u8]| {
    let mut node = node().lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    node.inputs += 1;
    if node.inputs > INPUTS_PER_STORE {
        *node = Node::new();
    }
    let limits = &node.config.limits;

    if let Ok(request) = SubmitRequest::decode(data) {
        // The parts of a desk submission that validation reads.
        let envelope = Envelope {
            destination: request.destination,
            request_type: request.request_type,
            precedence: request.precedence,
            case_reference: request.case_reference,
            subject: request.subject,
            body: request.body,
            language: request.language,
            in_reply_to: request.in_reply_to,
            attachments: request.attachments,
            handling_code: request.handling_code,
            handling_restrictions: request.handling_restrictions,
            preservation: request.preservation,
            expires_at: request.expires_at,
            ..Default::default()
        };
        let _ = check_envelope(&envelope, limits);
    }

    let Ok(request) = DeliverRequest::decode(data) else { return };
    for envelope in &request.envelopes {
        if check_envelope(envelope, limits).is_ok() {
            assert!(envelope.encoded_len() <= limits.max_envelope_bytes, "accepted an oversized envelope");
        }
    }
    let sender: NodeCode = "VN".parse().expect("a node code");
    let Ok((results, _)) = receive_batch(&node.store, &node.config, sender, request.envelopes.clone()) else {
        return;
    };
    assert_eq!(results.len(), request.envelopes.len(), "one result per envelope");
    for (envelope, result) in request.envelopes.iter().zip(results) {
        if let Some(Outcome::Receipt(receipt)) = result.outcome {
            assert_eq!(receipt.envelope_id, envelope.id);
            let id = uuid::Uuid::parse_str(&envelope.id).expect("a receipt only for a UUID");
            let stored = node.store.get(id).expect("readable").expect("stored");
            let message = view(&stored);
            assert_eq!(message.direction(), Direction::Inbound);
            if !receipt.duplicate {
                assert_eq!(message.envelope.as_ref(), Some(envelope), "stored as received");
            }
            if envelope.kind() == EnvelopeKind::Request {
                let listed = node
                    .store
                    .list(Listing::Inbox, usize::MAX, |s| {
                        view(s).envelope.is_some_and(|e| e.id == envelope.id)
                    })
                    .expect("inbox readable");
                assert_eq!(listed.len(), 1, "listed in the inbox exactly once");
            }
        }
    }
});
