//! Property tests of bad input (issue 5): arbitrary bytes and arbitrary well-formed envelopes go
//! through protobuf decoding, validation and a real store the way the desk and the peer service
//! take them. Nothing may panic, every refusal names a field with the right status code, and
//! the store stays consistent: every accepted envelope is readable, listed exactly once, and
//! stored once however often its id arrives.
//!
//! Its own test binary (not in `tests/it`): it needs no network, only the library. The case
//! count is bounded so it runs in seconds; `PROPTEST_CASES=10000 cargo test --test properties`
//! runs it longer.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::path::Path;

use hanoi247::config::{Limits, NodeConfig};
use hanoi247::domain::identity::NodeCode;
use hanoi247::domain::validation::{FieldError, check_envelope, check_times};
use hanoi247::peer::receive::{PeerError, receive_batch};
use hanoi247::proto::delivery_result::Outcome;
use hanoi247::proto::{
    Attachment, DeliverRequest, Direction, Envelope, EnvelopeKind, HandlingCode, PreservationRequest,
    RequestType, SubmitRequest,
};
use hanoi247::store::{Listing, Store, view};
use hanoi247::trust::signing::envelope_digest;
use proptest::prelude::*;
use prost::Message as _;
use prost_types::Timestamp;
use uuid::Uuid;

/// The node under test receives as FR from VN.
const ME: &str = "FR";
const SENDER: &str = "VN";

/// Small limits, so that random values often land on both sides of each of them.
const LIMITS: &str = "[limits]
max_envelope_bytes = 500
max_batch_envelopes = 6
max_attachments = 3
max_subject_chars = 12
max_case_reference_chars = 16
max_body_chars = 40
max_text_chars = 10
max_name_chars = 12

[delivery]
batch_size = 6
";

/// A node config for FR with [`LIMITS`], read through the real loader (so the test keeps up with
/// new config keys that have defaults).
fn node_config(dir: &Path) -> NodeConfig {
    let text = format!(
        "code = \"{ME}\"\nnetwork = \"hanoi247-test\"\ndata_dir = \"data\"\n{LIMITS}\n[tls]\n\
         network_ca = \"ca.pem\"\ncert = \"node.pem\"\nkey = \"node.key\"\nlocal_ca = \"local-ca.pem\"\n\
         desk_cert = \"desk.pem\"\ndesk_key = \"desk.key\"\n\n[directory]\nfile = \"directory.toml\"\n\
         public_key = \"{}\"\n",
        "0".repeat(64)
    );
    let path = dir.join("node.toml");
    std::fs::write(&path, text).unwrap();
    NodeConfig::load(&path).unwrap()
}

/// 256 cases per property (proptest's default, bounded for CI; `PROPTEST_CASES` overrides). A
/// failure is shrunk and printed with its input rather than written to a regressions file.
fn config() -> ProptestConfig {
    ProptestConfig { failure_persistence: None, ..ProptestConfig::default() }
}

/// A node's store and config. Opening sled takes tens of milliseconds, so each test thread
/// keeps one node for all its cases, and each case works in its own namespace of ids (a salt
/// mixed into every UUID it sends), so that cases cannot see each other and shrinking stays
/// deterministic.
struct Node {
    config: NodeConfig,
    store: Store,
    runtime: tokio::runtime::Runtime,
    /// This case's salt, mixed into the upper half of every id it sends.
    salt: u64,
    /// The first accepted envelope per id, in this case: what the store must hold.
    accepted: HashMap<Uuid, Envelope>,
    /// Every id sent in this case.
    sent: HashSet<Uuid>,
    /// The sequence number of the last event checked.
    events_seen: u64,
    // Dropped after the store.
    _dir: tempfile::TempDir,
}

thread_local! {
    static NODE: RefCell<Option<Node>> = const { RefCell::new(None) };
}

/// Runs `case` on this thread's node, in a fresh namespace of ids.
fn with_node(case: impl FnOnce(&mut Node) -> Result<(), TestCaseError>) -> Result<(), TestCaseError> {
    NODE.with_borrow_mut(|node| {
        let node = node.get_or_insert_with(Node::new);
        node.salt += 1;
        node.accepted.clear();
        node.sent.clear();
        case(node)
    })
}

impl Node {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = node_config(dir.path());
        let store = Store::open(&config.data_dir).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        Self {
            config,
            store,
            runtime,
            salt: 0,
            accepted: HashMap::new(),
            sent: HashSet::new(),
            events_seen: 0,
            _dir: dir,
        }
    }

    fn limits(&self) -> &Limits {
        &self.config.limits
    }

    /// `id` moved into this case's namespace, if it is a UUID.
    fn salted(&self, id: &mut String) {
        if let Ok(uuid) = Uuid::parse_str(id) {
            *id = Uuid::from_u128(uuid.as_u128() ^ (u128::from(self.salt) << 64)).to_string();
        }
    }

    /// Delivers `envelopes` from VN as the peer service does (store, then persist) and checks
    /// each result against validation and what was accepted before, then the store.
    fn deliver(&mut self, mut envelopes: Vec<Envelope>) -> Result<(), TestCaseError> {
        for envelope in &mut envelopes {
            self.salted(&mut envelope.id);
            self.salted(&mut envelope.in_reply_to);
            self.sent.extend(Uuid::parse_str(&envelope.id));
        }
        let sender: NodeCode = SENDER.parse().unwrap();
        let outcome = receive_batch(&self.store, &self.config, sender, envelopes.clone());
        let results = match outcome {
            Ok((results, _)) => results,
            Err(error) => {
                // Refused whole: it must be one of the whole-batch refusals, and nothing changed.
                let expected = envelopes.is_empty()
                    || envelopes.len() > self.limits().max_batch_envelopes
                    || envelopes.iter().any(|e| e.origin != SENDER);
                prop_assert!(expected, "refused a batch that should pass: {error}");
                prop_assert!(
                    matches!(
                        error,
                        PeerError::EmptyBatch | PeerError::Batch(_) | PeerError::OriginMismatch { .. }
                    ),
                    "{error}"
                );
                if let PeerError::Batch(field) = &error {
                    prop_assert!(field.over_limit && field.message.contains("limits.max_batch_envelopes"));
                }
                return self.check_unchanged(&envelopes);
            }
        };
        self.runtime.block_on(self.store.persist()).unwrap();
        prop_assert_eq!(results.len(), envelopes.len(), "one result per envelope");
        for (envelope, result) in envelopes.into_iter().zip(results) {
            let verdict = check_envelope(&envelope, self.limits())
                .and_then(|()| {
                    if envelope.destination == ME { Ok(()) } else { Err(FieldError::new("destination", "")) }
                })
                .and_then(|()| check_times(&envelope, std::time::SystemTime::now(), self.limits()))
                .and_then(|()| self.references(&envelope));
            match (verdict, result.outcome) {
                (Ok(()), Some(Outcome::Receipt(receipt))) => {
                    prop_assert!(
                        within_limits(&envelope, self.limits()),
                        "accepted over a limit: {envelope:?}"
                    );
                    prop_assert_eq!(&receipt.envelope_id, &envelope.id);
                    let id = Uuid::parse_str(&envelope.id).unwrap();
                    let seen = self.accepted.contains_key(&id);
                    prop_assert_eq!(receipt.duplicate, seen, "duplicate flag for {}", id);
                    prop_assert!(receipt.received_at.is_some());
                    self.accepted.entry(id).or_insert(envelope);
                }
                (Err(field), Some(Outcome::Refusal(refusal))) => {
                    prop_assert_eq!(&refusal.envelope_id, &envelope.id);
                    let code = if field.over_limit {
                        tonic::Code::ResourceExhausted
                    } else {
                        tonic::Code::InvalidArgument
                    };
                    prop_assert_eq!(refusal.code, code as i32, "{}", refusal.message);
                    prop_assert!(
                        refusal.message.starts_with(&format!("{}: ", field.field)),
                        "{}",
                        refusal.message
                    );
                }
                (verdict, outcome) => {
                    return Err(TestCaseError::fail(format!(
                        "validation said {verdict:?}, the peer service {outcome:?}"
                    )));
                }
            }
        }
        self.check_consistent()
    }

    /// What `Deliver` says of a valid envelope's id and `in_reply_to`, given what this case
    /// accepted (all from VN): a known id only for the same envelope again (same digest), a
    /// reply only to an accepted envelope.
    fn references(&self, envelope: &Envelope) -> Result<(), FieldError> {
        let id = Uuid::parse_str(&envelope.id).map_err(|_| FieldError::new("id", ""))?;
        if let Some(first) = self.accepted.get(&id) {
            return if envelope_digest(first) == envelope_digest(envelope) {
                Ok(())
            } else {
                Err(FieldError::new("id", "another envelope under this id"))
            };
        }
        match Uuid::parse_str(&envelope.in_reply_to) {
            Ok(parent) if !self.accepted.contains_key(&parent) => {
                Err(FieldError::new("in_reply_to", "not exchanged with VN"))
            }
            _ => Ok(()),
        }
    }

    /// After a refused batch: no new event (every change to a message records one) and none
    /// of its envelopes stored.
    fn check_unchanged(&self, envelopes: &[Envelope]) -> Result<(), TestCaseError> {
        let events = self.store.events_between(self.events_seen, u64::MAX, 1).unwrap();
        prop_assert!(events.is_empty(), "a refused batch recorded {:?}", events);
        for envelope in envelopes {
            if let Ok(id) = Uuid::parse_str(&envelope.id)
                && !self.accepted.contains_key(&id)
            {
                prop_assert!(self.store.get(id).unwrap().is_none(), "a refused batch stored {}", id);
            }
        }
        Ok(())
    }

    /// Every envelope accepted in this case is stored as first accepted, inbound; requests are
    /// in the inbox exactly once and replies among their parent's replies exactly once; the inbox
    /// lists nothing else of this case; the new events are numbered without gaps.
    fn check_consistent(&mut self) -> Result<(), TestCaseError> {
        let requests = self.accepted.values().filter(|e| e.kind() == EnvelopeKind::Request).count();
        // This case's entries are the newest (sequence numbers only grow): a window a little
        // larger than their number holds all of them and any extra copy.
        let newest = self.store.list(Listing::Inbox, requests + 8, |_| true).unwrap();
        let mut listed = HashMap::<Uuid, usize>::new();
        for stored in &newest {
            let id = Uuid::parse_str(&view(stored).envelope.unwrap().id).unwrap();
            *listed.entry(id).or_default() += 1;
        }
        for (id, envelope) in &self.accepted {
            let stored = self.store.get(*id).unwrap();
            prop_assert!(stored.is_some(), "accepted {} is not readable", id);
            let message = view(&stored.unwrap());
            prop_assert_eq!(message.direction(), Direction::Inbound);
            prop_assert_eq!(
                message.envelope.as_ref(),
                Some(envelope),
                "stored envelope differs from the first accepted"
            );
            if envelope.kind() == EnvelopeKind::Request {
                prop_assert_eq!(listed.get(id).copied(), Some(1), "{} listed in the inbox", id);
            } else {
                prop_assert!(!listed.contains_key(id), "a reply {} is in the inbox", id);
            }
            if let Ok(parent) = Uuid::parse_str(&envelope.in_reply_to) {
                let replies = self.store.replies(parent).unwrap();
                let count =
                    replies.iter().filter(|r| view(r).envelope.is_some_and(|e| e.id == envelope.id)).count();
                prop_assert_eq!(count, 1, "{} among the replies of {}", id, parent);
            }
        }
        prop_assert!(
            listed.keys().filter(|id| self.sent.contains(id)).all(|id| self.accepted.contains_key(id)),
            "the inbox lists what was never accepted"
        );
        let events = self.store.events_between(self.events_seen, u64::MAX, usize::MAX).unwrap();
        let sequences: Vec<u64> = events.iter().map(|e| e.sequence).collect();
        let expected: Vec<u64> = (self.events_seen + 1..=self.events_seen + events.len() as u64).collect();
        prop_assert_eq!(sequences, expected, "event numbers have gaps");
        self.events_seen += events.len() as u64;
        Ok(())
    }
}

/// The limits, checked independently of `validation`.
fn within_limits(envelope: &Envelope, limits: &Limits) -> bool {
    let chars = |s: &str| s.chars().count();
    let preservation_ok = envelope.preservation.as_ref().is_none_or(|p| {
        [&p.requesting_authority, &p.offence, &p.facts, &p.data_to_preserve, &p.link_to_offence]
            .into_iter()
            .chain([&p.custodian_or_location, &p.necessity])
            .all(|s| chars(s) <= limits.max_text_chars)
    });
    envelope.encoded_len() <= limits.max_envelope_bytes
        && envelope.attachments.len() <= limits.max_attachments
        && chars(&envelope.subject) <= limits.max_subject_chars
        && chars(&envelope.case_reference) <= limits.max_case_reference_chars
        && chars(&envelope.body) <= limits.max_body_chars
        && chars(&envelope.handling_restrictions) <= limits.max_text_chars
        && chars(&envelope.language) <= limits.max_name_chars
        && envelope
            .attachments
            .iter()
            .all(|a| chars(&a.name) <= limits.max_name_chars && chars(&a.media_type) <= limits.max_name_chars)
        && preservation_ok
}

/// Characters of every width (1 to 4 bytes in UTF-8), spaces and a right-to-left mark (allowed;
/// controls and bidi overrides are faults).
const ALPHABET: [char; 12] = ['a', 'Z', '7', ' ', '-', 'é', 'ệ', 'ü', '中', '語', '😀', '\u{200F}'];

/// One line of `len` characters, starting with a letter so that it is never blank.
fn line_of(len: usize) -> impl Strategy<Value = String> {
    let first = prop::sample::select(vec!['x', 'Đ', '中', '😀']);
    (first, prop::collection::vec(prop::sample::select(ALPHABET.to_vec()), len.saturating_sub(1)))
        .prop_map(|(first, rest)| std::iter::once(first).chain(rest).collect())
}

/// A valid text of at most `limit` characters: short, or at (and just under) the limit.
fn text_within(limit: usize) -> impl Strategy<Value = String> {
    prop_oneof![1..=4usize, limit.saturating_sub(2).max(1)..=limit].prop_flat_map(line_of)
}

/// A text just over `limit`, or far over it.
fn text_over(limit: usize) -> impl Strategy<Value = String> {
    prop_oneof![limit + 1..=limit + 2, limit + 3..=4 * limit + 4].prop_flat_map(line_of)
}

/// The upper half of the pooled ids.
const POOL_HIGH: u64 = 0x0190_0000_0000_7000;

/// A few ids, so that duplicates and replies to earlier envelopes are common.
fn pooled_id() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (0u128..6).prop_map(|n| Uuid::from_u128((u128::from(POOL_HIGH) << 64) + n).to_string()),
        1 => any::<u128>().prop_map(|n| Uuid::from_u128(n).to_string()),
    ]
}

/// Seconds since the epoch now, when the strategies are built.
fn now_seconds() -> i64 {
    hanoi247::domain::timestamp::now().seconds
}

/// A `created_at` a peer may send: up to 300 days old (queued), not ahead of this node's clock.
fn timestamp() -> impl Strategy<Value = Timestamp> {
    let now = now_seconds();
    (now - 300 * 86_400..now - 1, 0..1_000_000_000i32)
        .prop_map(|(seconds, nanos)| Timestamp { seconds, nanos })
}

/// An `expires_at` within the default lifetime (365 days) of `created_at`.
fn expiry_after(created: &Timestamp, lifetime_seconds: i64) -> Timestamp {
    Timestamp { seconds: created.seconds + lifetime_seconds, nanos: created.nanos }
}

/// Any timestamp at all: extremes, `nanos` out of range, years before 1970 and after 9999.
fn any_timestamp() -> impl Strategy<Value = Timestamp> {
    let seconds = prop_oneof![
        Just(i64::MIN),
        Just(i64::MAX),
        Just(-1),
        Just(0),
        Just(253_402_300_799),
        Just(253_402_300_800),
        any::<i64>(),
        (now_seconds() - 86_400)..(now_seconds() + 86_400),
    ];
    let nanos = prop_oneof![
        Just(i32::MIN),
        Just(i32::MAX),
        Just(-1),
        Just(999_999_999),
        Just(1_000_000_000),
        any::<i32>(),
        0..1_000_000_000i32
    ];
    (seconds, nanos).prop_map(|(seconds, nanos)| Timestamp { seconds, nanos })
}

/// Any text: controls (C0, DEL, C1), bidi overrides, isolates and marks, newlines, tabs and any
/// other character.
fn any_text() -> impl Strategy<Value = String> {
    let hostile = prop::sample::select(vec![
        '\u{0}', '\u{7}', '\u{1b}', '\t', '\n', '\r', '\u{7f}', '\u{85}', '\u{9b}', '\u{200E}', '\u{200F}',
        '\u{202A}', '\u{202E}', '\u{2066}', '\u{2069}', '\\', 'a', 'é', '中', '😀', ']', ';',
    ]);
    prop::collection::vec(prop_oneof![3 => hostile, 1 => any::<char>()], 0..24)
        .prop_map(|chars| chars.into_iter().collect())
}

fn attachment(limits: &Limits) -> impl Strategy<Value = Attachment> + use<> {
    let name = text_within(limits.max_name_chars);
    let media_type = text_within(limits.max_name_chars);
    (name, media_type, any::<u64>(), prop::collection::vec(any::<u8>(), 32)).prop_map(
        |(name, media_type, size_bytes, sha256)| Attachment { name, media_type, size_bytes, sha256 },
    )
}

fn preservation(limits: &Limits) -> impl Strategy<Value = PreservationRequest> + use<> {
    let text = || text_within(limits.max_text_chars);
    ((text(), text(), text(), text()), (text(), text(), text()), 60u32..=400).prop_map(
        |(
            (requesting_authority, offence, facts, data_to_preserve),
            (link_to_offence, custodian_or_location, necessity),
            days,
        )| {
            PreservationRequest {
                requesting_authority,
                offence,
                facts,
                data_to_preserve,
                link_to_offence,
                custodian_or_location,
                necessity,
                mutual_legal_assistance_to_follow: true,
                preservation_days: days,
            }
        },
    )
}

/// A valid envelope from VN to FR, within `limits` field by field (the encoded size may still be
/// over): every request type, kind and handling code, replies to ids that may exist, non-ASCII
/// text at and near each limit, attachments up to the most allowed.
fn valid_envelope(limits: &Limits) -> impl Strategy<Value = Envelope> + use<> {
    let language = prop::sample::select(vec!["en", "vi", "fr-FR", "zh-Hant-TW", "de-CH-1996"]);
    let kind = prop_oneof![3 => Just(EnvelopeKind::Request as i32), 2 => 2..=5i32];
    let in_reply_to = prop_oneof![Just(String::new()), pooled_id()];
    (
        (pooled_id(), kind, 1..=7i32, 1..=4i32, in_reply_to),
        (text_within(limits.max_case_reference_chars), text_within(limits.max_subject_chars)),
        (
            prop_oneof![Just(String::new()), text_within(limits.max_body_chars)],
            language,
            timestamp(),
            1i64..365 * 86_400,
        ),
        (
            prop::collection::vec(attachment(limits), 0..=limits.max_attachments),
            1..=4i32,
            text_within(limits.max_text_chars),
        ),
        (preservation(limits), any::<bool>()),
    )
        .prop_map(
            |(
                (id, kind, request_type, precedence, in_reply_to),
                (case_reference, subject),
                (body, language, created_at, lifetime),
                (attachments, handling_code, restrictions),
                (preservation, with_preservation),
            )| {
                // Replies need a parent; a PRESERVATION request that starts a chain needs its
                // fields, and only PRESERVATION requests may carry them.
                let in_reply_to = if kind != EnvelopeKind::Request as i32 && in_reply_to.is_empty() {
                    Uuid::from_u128(u128::from(POOL_HIGH) << 64).to_string()
                } else {
                    in_reply_to
                };
                let needs_preservation = request_type == RequestType::Preservation as i32
                    && kind == EnvelopeKind::Request as i32
                    && in_reply_to.is_empty();
                let preservation = (request_type == RequestType::Preservation as i32
                    && (needs_preservation || with_preservation))
                    .then_some(preservation);
                Envelope {
                    id,
                    origin: SENDER.into(),
                    destination: ME.into(),
                    kind,
                    request_type,
                    precedence,
                    case_reference,
                    subject,
                    body,
                    language: language.into(),
                    expires_at: Some(expiry_after(&created_at, lifetime)),
                    created_at: Some(created_at),
                    in_reply_to,
                    attachments,
                    handling_code,
                    handling_restrictions: if handling_code == HandlingCode::H3 as i32 {
                        restrictions
                    } else {
                        String::new()
                    },
                    preservation,
                    exercise: with_preservation,
                    outcome: None,
                    follow_up: None,
                    // Signatures are checked by `Deliver`, not by `receive_batch`.
                    origin_signature: Vec::new(),
                    origin_batch: None,
                }
            },
        )
}

/// One thing wrong with an envelope (or nothing): every rule of validation, and each limit.
#[derive(Debug, Clone)]
enum Fault {
    None,
    Subject(String),
    CaseReference(String),
    Body(String),
    Restrictions(String),
    Facts(String),
    AttachmentName(String),
    MediaType(String),
    TooManyAttachments,
    Digest(Vec<u8>),
    Id(String),
    InReplyTo(String),
    Destination(String),
    Origin(String),
    Language(String),
    Kind(i32),
    RequestType(i32),
    Precedence(i32),
    Handling(i32),
    NoCreatedAt,
    NoExpiresAt,
    Times(Timestamp, Timestamp),
    PreservationDays(u32),
    NoMutualLegalAssistance,
    NoPreservation,
}

fn fault(limits: &Limits) -> impl Strategy<Value = Fault> + use<> {
    let bad_code = || prop_oneof![Just(0), 100..=200i32, any::<i32>()];
    let bad_text = |limit: usize| prop_oneof![3 => text_over(limit), 1 => Just(String::new()), 1 => Just(" \t ".to_owned())];
    prop_oneof![
        60 => Just(Fault::None),
        1 => prop_oneof![
            bad_text(limits.max_subject_chars),
            Just("two\nlines".to_owned()),
            Just("x\u{1b}]0;t\u{7}".to_owned()),
            Just("\u{202E}txt".to_owned()),
        ].prop_map(Fault::Subject),
        1 => prop_oneof![Just("a\u{1b}[2J".to_owned()), Just("b\u{85}".to_owned()), Just("\u{2066}c".to_owned())].prop_map(Fault::Body),
        1 => bad_text(limits.max_case_reference_chars).prop_map(Fault::CaseReference),
        1 => text_over(limits.max_body_chars).prop_map(Fault::Body),
        1 => bad_text(limits.max_text_chars).prop_map(Fault::Restrictions),
        1 => bad_text(limits.max_text_chars).prop_map(Fault::Facts),
        1 => bad_text(limits.max_name_chars).prop_map(Fault::AttachmentName),
        1 => bad_text(limits.max_name_chars).prop_map(Fault::MediaType),
        1 => Just(Fault::TooManyAttachments),
        1 => prop::collection::vec(any::<u8>(), 0..40).prop_filter("not 32 bytes", |d| d.len() != 32).prop_map(Fault::Digest),
        1 => prop_oneof![Just(String::new()), "[0-9a-z-]{1,40}", "[a-f]{65,70}"].prop_map(Fault::Id),
        1 => prop_oneof!["[0-9a-z-]{1,40}", "[a-f]{65,70}"].prop_map(Fault::InReplyTo),
        1 => prop_oneof![Just("DE".to_owned()), Just(String::new()), "[A-Za-z0-9]{1,5}"].prop_map(Fault::Destination),
        1 => prop_oneof![Just("DE".to_owned()), Just("vn".to_owned()), "[A-Z]{3}"].prop_map(Fault::Origin),
        1 => prop_oneof![Just(String::new()), Just("english".to_owned()), text_over(limits.max_name_chars)].prop_map(Fault::Language),
        1 => bad_code().prop_map(Fault::Kind),
        1 => bad_code().prop_map(Fault::RequestType),
        1 => bad_code().prop_map(Fault::Precedence),
        1 => bad_code().prop_map(Fault::Handling),
        1 => Just(Fault::NoCreatedAt),
        1 => Just(Fault::NoExpiresAt),
        2 => (any_timestamp(), any_timestamp()).prop_map(|(created, expires)| Fault::Times(created, expires)),
        1 => (0u32..60).prop_map(Fault::PreservationDays),
        1 => Just(Fault::NoMutualLegalAssistance),
        1 => Just(Fault::NoPreservation),
    ]
}

/// `envelope` with `fault`. A fault with nothing to act on (a digest, and no attachment) leaves
/// the envelope valid: the test compares with validation's verdict, not with the fault.
fn with_fault(mut envelope: Envelope, fault: Fault, limits: &Limits) -> Envelope {
    let preservation = || PreservationRequest {
        requesting_authority: "A05".into(),
        offence: "fraud".into(),
        facts: "phishing".into(),
        data_to_preserve: "mailbox".into(),
        link_to_offence: "sent it".into(),
        custodian_or_location: "X".into(),
        necessity: "deletion".into(),
        mutual_legal_assistance_to_follow: true,
        preservation_days: 90,
    };
    match fault {
        Fault::None => {}
        Fault::Subject(text) => envelope.subject = text,
        Fault::CaseReference(text) => envelope.case_reference = text,
        Fault::Body(text) => envelope.body = text,
        Fault::Restrictions(text) => envelope.handling_restrictions = text,
        Fault::Facts(text) => envelope.preservation.get_or_insert_with(preservation).facts = text,
        Fault::AttachmentName(text) => envelope.attachments.iter_mut().for_each(|a| a.name = text.clone()),
        Fault::MediaType(text) => envelope.attachments.iter_mut().for_each(|a| a.media_type = text.clone()),
        Fault::TooManyAttachments => {
            let one =
                Attachment { name: "a".into(), media_type: "b".into(), size_bytes: 1, sha256: vec![7; 32] };
            envelope.attachments = vec![one; limits.max_attachments + 1];
        }
        Fault::Digest(digest) => envelope.attachments.iter_mut().for_each(|a| a.sha256 = digest.clone()),
        Fault::Id(id) => envelope.id = id,
        Fault::InReplyTo(id) => envelope.in_reply_to = id,
        Fault::Destination(code) => envelope.destination = code,
        Fault::Origin(code) => envelope.origin = code,
        Fault::Language(tag) => envelope.language = tag,
        Fault::Kind(value) => envelope.kind = value,
        Fault::RequestType(value) => envelope.request_type = value,
        Fault::Precedence(value) => envelope.precedence = value,
        Fault::Handling(value) => envelope.handling_code = value,
        Fault::NoCreatedAt => envelope.created_at = None,
        Fault::NoExpiresAt => envelope.expires_at = None,
        Fault::Times(created, expires) => {
            envelope.created_at = Some(created);
            envelope.expires_at = Some(expires);
        }
        Fault::PreservationDays(days) => {
            envelope.preservation.get_or_insert_with(preservation).preservation_days = days
        }
        Fault::NoMutualLegalAssistance => {
            envelope.preservation.get_or_insert_with(preservation).mutual_legal_assistance_to_follow = false;
        }
        Fault::NoPreservation => envelope.preservation = None,
    }
    envelope
}

/// Structurally valid envelopes (every field of the right type), most of them acceptable, the
/// others with one thing wrong.
fn envelope(limits: &Limits) -> impl Strategy<Value = Envelope> + use<> {
    let limits_copy = limits.clone();
    (valid_envelope(limits), fault(limits))
        .prop_map(move |(envelope, fault)| with_fault(envelope, fault, &limits_copy))
}

/// Batches of envelopes, some of them repeated (the same envelope sent twice in one call), now
/// and then one over the batch limit or empty.
fn batch(limits: &Limits) -> impl Strategy<Value = Vec<Envelope>> + use<> {
    let count = prop_oneof![
        8 => 1..=limits.max_batch_envelopes.saturating_sub(2).max(1),
        1 => Just(0),
        1 => Just(limits.max_batch_envelopes + 1),
    ];
    (
        count.prop_flat_map({
            let limits = limits.clone();
            move |n| prop::collection::vec(envelope(&limits), n)
        }),
        prop::collection::vec(any::<prop::sample::Index>(), 0..=2),
    )
        .prop_map(|(mut envelopes, repeats)| {
            for index in repeats {
                if !envelopes.is_empty() {
                    let again = envelopes[index.index(envelopes.len())].clone();
                    envelopes.push(again);
                }
            }
            envelopes
        })
}

/// The limits of [`LIMITS`], without a store.
fn limits() -> Limits {
    node_config(tempfile::tempdir().unwrap().path()).limits
}

/// The envelope the desk would build from a `Submit` (the parts validation looks at).
fn as_desk_would(request: SubmitRequest) -> Envelope {
    Envelope {
        id: Uuid::now_v7().to_string(),
        origin: SENDER.into(),
        destination: request.destination,
        kind: EnvelopeKind::Request as i32,
        request_type: request.request_type,
        precedence: request.precedence,
        case_reference: if request.case_reference.trim().is_empty() {
            "VN-2026-0000abcd".into()
        } else {
            request.case_reference
        },
        subject: request.subject,
        body: request.body,
        language: if request.language.is_empty() { "en".into() } else { request.language },
        created_at: Some(hanoi247::domain::timestamp::now()),
        expires_at: Some(
            request
                .expires_at
                .unwrap_or_else(|| hanoi247::domain::timestamp::after(std::time::Duration::from_secs(3600))),
        ),
        in_reply_to: request.in_reply_to,
        attachments: request.attachments,
        handling_code: if request.handling_code == 0 {
            HandlingCode::H0 as i32
        } else {
            request.handling_code
        },
        handling_restrictions: request.handling_restrictions,
        preservation: request.preservation,
        exercise: request.exercise,
        outcome: None,
        follow_up: None,
        origin_signature: Vec::new(),
        origin_batch: None,
    }
}

/// Validation's verdict on an envelope agrees with the limits and never panics.
fn validate(envelope: &Envelope, limits: &Limits) -> Result<(), TestCaseError> {
    match check_envelope(envelope, limits)
        .and_then(|()| check_times(envelope, std::time::SystemTime::now(), limits))
    {
        Ok(()) => prop_assert!(within_limits(envelope, limits), "accepted over a limit: {envelope:?}"),
        Err(error) => {
            prop_assert!(!error.field.is_empty() && !error.message.is_empty(), "{error:?}");
            if error.over_limit {
                prop_assert!(
                    error.message.contains("limits."),
                    "an over-limit refusal names its limit: {error}"
                );
            }
        }
    }
    Ok(())
}

/// `bytes` with `edits` applied: (position, byte) overwrites, then a cut at `cut`.
fn mutate(
    mut bytes: Vec<u8>,
    edits: &[(prop::sample::Index, u8)],
    cut: Option<prop::sample::Index>,
) -> Vec<u8> {
    if !bytes.is_empty() {
        for (at, byte) in edits {
            let at = at.index(bytes.len());
            bytes[at] = *byte;
        }
        if let Some(cut) = cut {
            bytes.truncate(cut.index(bytes.len()));
        }
    }
    bytes
}

proptest! {
    #![proptest_config(config())]

    /// Arbitrary bytes, and valid encodings with bytes overwritten or cut off, decoded as a
    /// peer's `DeliverRequest` and a desk client's `SubmitRequest`: decoding fails cleanly or
    /// yields messages that validation and the store handle without panicking.
    #[test]
    fn arbitrary_bytes_are_decoded_validated_and_stored_safely(
        random in prop::collection::vec(any::<u8>(), 0..512),
        valid in batch(&limits()),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        cut in prop::option::of(any::<prop::sample::Index>()),
    ) {
        let limits = limits();
        let mutated = mutate(DeliverRequest { envelopes: valid, ..Default::default() }.encode_to_vec(), &edits, cut);
        for bytes in [random, mutated] {
            if let Ok(request) = DeliverRequest::decode(bytes.as_slice()) {
                for envelope in &request.envelopes {
                    validate(envelope, &limits)?;
                }
                with_node(|node| node.deliver(request.envelopes))?;
            }
            if let Ok(request) = SubmitRequest::decode(bytes.as_slice()) {
                validate(&as_desk_would(request), &limits)?;
            }
        }
    }

    /// Well-formed envelopes of every shape, in batches with repeats, delivered twice: what
    /// validation accepts is stored once, readable and listed once; the rest is refused with the
    /// field named, and the store stays consistent.
    #[test]
    fn structurally_valid_envelopes_keep_the_store_consistent(
        first in batch(&limits()),
        second in batch(&limits()),
    ) {
        with_node(|node| {
            node.deliver(first.clone())?;
            node.deliver(second)?;
            // The same batch again: every envelope accepted from it is now a duplicate.
            node.deliver(first)
        })?;
    }
}

/// A request envelope from [`SENDER`] carrying `texts` (subject, body, case reference) and the
/// given times, as a hostile peer could send it or an older version could have stored it.
fn hostile_envelope(texts: &[String; 3], created: Timestamp, expires: Timestamp) -> Envelope {
    Envelope {
        id: Uuid::now_v7().to_string(),
        origin: SENDER.into(),
        destination: ME.into(),
        kind: EnvelopeKind::Request as i32,
        request_type: RequestType::TechnicalAdvice as i32,
        precedence: 1,
        case_reference: texts[2].clone(),
        subject: texts[0].clone(),
        body: texts[1].clone(),
        language: "en".into(),
        created_at: Some(created),
        expires_at: Some(expires),
        handling_code: HandlingCode::H0 as i32,
        ..Default::default()
    }
}

/// No character that could drive a terminal or reorder text, but for the newlines, tabs and
/// CRLF a multi-line text keeps.
fn printable_output(what: &str, text: &str) -> Result<(), TestCaseError> {
    let raw =
        text.chars().find(|c| hanoi247::domain::text::is_unsafe(*c) && !matches!(c, '\n' | '\t' | '\r'));
    prop_assert!(raw.is_none(), "{what} printed {raw:?} raw: {text:?}");
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    /// Issue 14, acceptance 2: arbitrary timestamps (any `seconds` and `nanos`) and arbitrary
    /// text (controls, bidi overrides) through `Submit`'s validation, `Deliver` and every
    /// renderer (the CLI table and `show`, the JSON views, the console's message page and inbox
    /// rows): nothing panics, refusals name a field, and no renderer prints a control raw.
    #[test]
    fn hostile_times_and_text_never_panic_at_an_edge_or_in_a_renderer(
        texts in [any_text(), any_text(), any_text()],
        times in [any_timestamp(), any_timestamp(), any_timestamp(), any_timestamp()],
        note in any_text(),
    ) {
        let limits = limits();
        let [created, expires, at, deadline] = times;
        // The desk: what a client's `Submit` becomes, and the checks `Submit` runs on it.
        let request = SubmitRequest {
            destination: ME.into(),
            request_type: RequestType::TechnicalAdvice as i32,
            precedence: 1,
            subject: texts[0].clone(),
            body: texts[1].clone(),
            case_reference: texts[2].clone(),
            expires_at: Some(expires),
            ..Default::default()
        };
        let _ = hanoi247::domain::validation::check_timestamp("expires_at", &expires);
        validate(&as_desk_would(request), &limits)?;
        // The peer edge.
        let envelope = hostile_envelope(&texts, created, expires);
        validate(&envelope, &limits)?;
        with_node(|node| node.deliver(vec![envelope.clone()]))?;
        // Every renderer, on a message as an older version might have stored it.
        let message = hanoi247::proto::Message {
            envelope: Some(envelope),
            direction: Direction::Inbound as i32,
            timeline: vec![hanoi247::proto::TimelineEntry { at: Some(at), state: 2, note: note.clone() }],
            last_error: note.clone(),
            next_attempt_at: Some(deadline),
            received_at: Some(at),
            ack_deadline: Some(deadline),
            ..Default::default()
        };
        let event = hanoi247::proto::WatchResponse {
            sequence: 1,
            at: Some(at),
            message_id: texts[0].clone(),
            peer: texts[2].clone(),
            note,
            ..Default::default()
        };
        let table = hanoi247::cli::render::message_table(std::slice::from_ref(&message));
        printable_output("the inbox table", &table)?;
        let details = hanoi247::cli::render::message_details(&message, std::slice::from_ref(&message));
        printable_output("show", &details)?;
        let _ = hanoi247::cli::render::message_json(&message).to_string();
        let _ = hanoi247::domain::json::event_json(&event).to_string();
        for page in hanoi247::console::render_for_officer(ME, &message, std::slice::from_ref(&message)) {
            printable_output("the console", &page)?;
        }
    }
}
