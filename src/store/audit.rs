//! The tamper-evident audit log as pure functions: the canonical encoding of an audit record,
//! its SHA-256 hash, sealing a new record onto the chain, and verifying a chain record by record
//! so that the first broken link is named. The store appends records (`store::Changes::audit`);
//! `hanoi247 audit verify` verifies what the desk API streams (`ListAudit`), on the client.
//!
//! Canonical encoding (version 1), the bytes that are hashed:
//!
//! ```text
//! "hanoi247-audit-v1"                 17 bytes, a domain tag
//! sequence                            u64 big-endian
//! at.seconds, at.nanos                i64 big-endian, i32 big-endian (0, 0 when absent)
//! who, action, message_id, details    each: u32 big-endian length in bytes, then the UTF-8 bytes
//! prev_hash                           u32 big-endian length (32), then the bytes
//! ```
//!
//! `hash` = SHA-256 of that. The first record's `prev_hash` is 32 zero bytes. The encoding does
//! not depend on protobuf's (which is not canonical), so a verifier needs only these rules.

use ring::digest;

use crate::proto::ListAuditResponse;

/// The domain tag that starts every encoding: a hash of this can never be mistaken for a hash of
/// anything else the node signs or digests.
const DOMAIN_TAG: &[u8] = b"hanoi247-audit-v1";

/// `prev_hash` of the first record.
pub const GENESIS_HASH: [u8; 32] = [0; 32];

/// Longest `details` kept in a record (longer text is cut, on a character boundary).
pub const MAX_DETAILS_CHARS: usize = 200;

/// What the audit log says of a text it must not hold (a body, a note, a reason, a peer's
/// refusal): "N characters, SHA-256 <hex>". Whoever holds the text can show it is the one
/// recorded; the auditor learns nothing of its content.
pub fn text_digest(text: &str) -> String {
    let digest = digest::digest(&digest::SHA256, text.as_bytes());
    format!("{} characters, SHA-256 {}", text.chars().count(), hex::encode(digest.as_ref()))
}

/// Response header of `ListAudit`: "<sequence>:<hash hex>" of the chain's last record when the
/// call began.
pub const AUDIT_HEAD_HEADER: &str = "hanoi247-audit-head";

/// Response header of `ListAudit`, once per peer: "<CC> <sequence>:<hash hex> <signed at, Unix
/// seconds>", the newest head of this log that peer says it witnessed (`peer::witness`).
pub const AUDIT_WITNESSED_HEADER: &str = "hanoi247-audit-witnessed";

/// A head of this log that a peer witnessed, as `audit verify` reads it from
/// [`AUDIT_WITNESSED_HEADER`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessedHead {
    /// The peer that kept it.
    pub peer: String,
    /// The head.
    pub head: ChainHead,
    /// When this node signed it, Unix seconds.
    pub signed_at: i64,
}

impl WitnessedHead {
    /// The header value.
    pub fn to_text(&self) -> String {
        format!("{} {} {}", self.peer, self.head.to_text(), self.signed_at)
    }

    /// Parses [`WitnessedHead::to_text`].
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = text.split_whitespace();
        let (Some(peer), Some(head), Some(signed_at), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("'{text}': expected <CC> <sequence>:<hash hex> <unix seconds>"));
        };
        let signed_at =
            signed_at.parse().map_err(|_| format!("'{signed_at}' is not a time in Unix seconds"))?;
        Ok(Self { peer: peer.to_owned(), head: ChainHead::parse(head)?, signed_at })
    }
}

/// The end of the chain: the last record's sequence number and hash (0 and [`GENESIS_HASH`] for
/// an empty chain). Appending needs only this, so it is O(1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainHead {
    /// The last record's sequence number.
    pub sequence: u64,
    /// The last record's hash.
    pub hash: [u8; 32],
}

impl Default for ChainHead {
    fn default() -> Self {
        Self { sequence: 0, hash: GENESIS_HASH }
    }
}

impl ChainHead {
    /// The head as 40 bytes (sequence big-endian, hash), as the store keeps it.
    pub fn to_bytes(&self) -> [u8; 40] {
        let mut bytes = [0; 40];
        bytes[..8].copy_from_slice(&self.sequence.to_be_bytes());
        bytes[8..].copy_from_slice(&self.hash);
        bytes
    }

    /// The head from [`ChainHead::to_bytes`]; `None` if it is not 40 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let sequence = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
        let hash = bytes.get(8..)?.try_into().ok()?;
        (bytes.len() == 40).then_some(Self { sequence, hash })
    }

    /// "<sequence>:<hash hex>", the form of the `hanoi247-audit-head` header and `--anchor`.
    pub fn to_text(&self) -> String {
        format!("{}:{}", self.sequence, hex::encode(self.hash))
    }

    /// Parses [`ChainHead::to_text`].
    pub fn parse(text: &str) -> Result<Self, String> {
        let (sequence, hash) =
            text.trim().split_once(':').ok_or_else(|| format!("'{text}': expected <sequence>:<hash hex>"))?;
        let sequence = sequence.parse().map_err(|_| format!("'{sequence}' is not a sequence number"))?;
        let hash = hex::decode(hash)
            .ok()
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .ok_or_else(|| format!("'{hash}' is not a SHA-256 hash in hex (64 digits)"))?;
        Ok(Self { sequence, hash })
    }
}

/// The canonical encoding of `record` (every field but `hash` and `damaged`).
pub fn canonical_encoding(record: &ListAuditResponse) -> Vec<u8> {
    let text_len = record.who.len() + record.action.len() + record.message_id.len() + record.details.len();
    let mut out = Vec::with_capacity(DOMAIN_TAG.len() + 8 + 12 + 5 * 4 + text_len + record.prev_hash.len());
    out.extend_from_slice(DOMAIN_TAG);
    out.extend_from_slice(&record.sequence.to_be_bytes());
    let (seconds, nanos) = record.at.as_ref().map_or((0, 0), |at| (at.seconds, at.nanos));
    out.extend_from_slice(&seconds.to_be_bytes());
    out.extend_from_slice(&nanos.to_be_bytes());
    for field in [&record.who, &record.action, &record.message_id, &record.details] {
        put_bytes(&mut out, field.as_bytes());
    }
    put_bytes(&mut out, &record.prev_hash);
    out
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    // Fields are short (details are cut to MAX_DETAILS_CHARS); a length past u32 cannot occur
    // in a record the node wrote, and saturating keeps a forged one from wrapping around.
    out.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// SHA-256 of the canonical encoding.
pub fn record_hash(record: &ListAuditResponse) -> [u8; 32] {
    let digest = digest::digest(&digest::SHA256, &canonical_encoding(record));
    let mut hash = [0; 32];
    hash.copy_from_slice(digest.as_ref());
    hash
}

/// Makes the record that follows `head`: sets its sequence number, `prev_hash` and `hash`, and
/// returns the new head.
pub fn seal(head: &ChainHead, record: &mut ListAuditResponse) -> ChainHead {
    record.sequence = head.sequence + 1;
    record.prev_hash = head.hash.to_vec();
    record.details = cut(&record.details, MAX_DETAILS_CHARS);
    record.damaged.clear();
    let hash = record_hash(record);
    record.hash = hash.to_vec();
    ChainHead { sequence: record.sequence, hash }
}

fn cut(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// The first broken link of a chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokenLink {
    /// The bytes stored for this record are not a record any more.
    #[error("record {sequence} is damaged: its stored bytes cannot be decoded ({reason})")]
    Damaged {
        /// The record's sequence number (from its key in the store).
        sequence: u64,
        /// The decoding error.
        reason: String,
    },
    /// A sequence number is missing: the record was deleted.
    #[error("record {sequence} is missing (deleted): the chain goes from record {before} to {found}")]
    Missing {
        /// The missing sequence number.
        sequence: u64,
        /// The last good record before the gap (0: none).
        before: u64,
        /// The record found where `sequence` was expected.
        found: u64,
    },
    /// A record appears again or out of order.
    #[error("record {found} appears where record {sequence} was expected (records reordered or copied)")]
    OutOfOrder {
        /// The sequence number expected.
        sequence: u64,
        /// The one found.
        found: u64,
    },
    /// The record's contents do not give its stored hash: it was changed after it was written.
    #[error(
        "record {sequence}: hash mismatch: its contents were changed after it was written (stored {stored}, computed {computed})"
    )]
    HashMismatch {
        /// The record.
        sequence: u64,
        /// The hash stored in it (hex).
        stored: String,
        /// The hash of its contents (hex).
        computed: String,
    },
    /// The record's `prev_hash` is not the hash of the record before it.
    #[error(
        "record {sequence}: broken prev link: it does not point at record {previous} as written (record {previous} was changed and re-hashed, or replaced)"
    )]
    BrokenPrevLink {
        /// The record whose link is broken.
        sequence: u64,
        /// The record it should point at (0: the start of the chain).
        previous: u64,
    },
    /// The chain ends before the head the node reported: the last records were deleted.
    #[error("records {first} to {last} are missing (deleted from the end): the chain ends at record {found}")]
    Truncated {
        /// The first missing sequence number.
        first: u64,
        /// The head's sequence number.
        last: u64,
        /// The last record found.
        found: u64,
    },
    /// A peer witnessed a head past the chain's end: the chain was cut short (and its head
    /// rewritten) after the peer saw it.
    #[error(
        "the log ends at record {found} but {peer} witnessed head {witnessed} signed at {signed_at}: records {first} to {witnessed} were deleted (the log was cut short and its head rewritten)"
    )]
    BehindWitness {
        /// The peer.
        peer: String,
        /// The last record found.
        found: u64,
        /// The first missing sequence number.
        first: u64,
        /// The sequence number the peer witnessed.
        witnessed: u64,
        /// When the witnessed head was signed (RFC 3339).
        signed_at: String,
    },
    /// The chain's record at a head a peer witnessed is not the record it witnessed.
    #[error(
        "record {sequence} is not the one {peer} witnessed as the head signed at {signed_at} (hash {witnessed_hash}, now {found_hash}): the log was rewritten from there"
    )]
    ForkFromWitness {
        /// The peer.
        peer: String,
        /// The witnessed sequence number.
        sequence: u64,
        /// The witnessed hash (hex).
        witnessed_hash: String,
        /// The hash in the chain now (hex).
        found_hash: String,
        /// When the witnessed head was signed (RFC 3339).
        signed_at: String,
    },
    /// The chain does not contain the anchor the caller noted earlier.
    #[error("record {sequence}: does not match the anchor noted earlier ({reason})")]
    AnchorMismatch {
        /// The anchor's sequence number.
        sequence: u64,
        /// What differs.
        reason: String,
    },
}

/// Verifies a chain one record at a time, in sequence order, stopping at the first broken link.
#[derive(Debug, Default)]
pub struct Verifier {
    head: ChainHead,
}

impl Verifier {
    /// A verifier at the start of the chain.
    pub fn new() -> Self {
        Self::default()
    }

    /// The last record verified so far.
    pub fn head(&self) -> ChainHead {
        self.head
    }

    /// Checks the next record: present (no gap), decodable, hashing to its stored hash, and
    /// linked to the record before.
    pub fn push(&mut self, record: &ListAuditResponse) -> Result<(), BrokenLink> {
        let expected = self.head.sequence + 1;
        if !record.damaged.is_empty() && record.sequence >= expected {
            if record.sequence > expected {
                return Err(self.missing(record.sequence));
            }
            return Err(BrokenLink::Damaged { sequence: record.sequence, reason: record.damaged.clone() });
        }
        if record.sequence > expected {
            return Err(self.missing(record.sequence));
        }
        if record.sequence < expected {
            return Err(BrokenLink::OutOfOrder { sequence: expected, found: record.sequence });
        }
        let computed = record_hash(record);
        if record.hash != computed {
            return Err(BrokenLink::HashMismatch {
                sequence: record.sequence,
                stored: hex::encode(&record.hash),
                computed: hex::encode(computed),
            });
        }
        if record.prev_hash != self.head.hash {
            return Err(BrokenLink::BrokenPrevLink {
                sequence: record.sequence,
                previous: self.head.sequence,
            });
        }
        self.head = ChainHead { sequence: record.sequence, hash: computed };
        Ok(())
    }

    fn missing(&self, found: u64) -> BrokenLink {
        BrokenLink::Missing { sequence: self.head.sequence + 1, before: self.head.sequence, found }
    }

    /// Ends the walk: the chain must reach `reported`, the head the node said it had.
    pub fn finish(&self, reported: Option<&ChainHead>) -> Result<ChainHead, BrokenLink> {
        if let Some(reported) = reported {
            if reported.sequence > self.head.sequence {
                return Err(BrokenLink::Truncated {
                    first: self.head.sequence + 1,
                    last: reported.sequence,
                    found: self.head.sequence,
                });
            }
            if reported.sequence == self.head.sequence && reported.hash != self.head.hash {
                return Err(BrokenLink::HashMismatch {
                    sequence: self.head.sequence,
                    stored: hex::encode(reported.hash),
                    computed: hex::encode(self.head.hash),
                });
            }
        }
        Ok(self.head)
    }
}

/// Checks a record against an anchor noted earlier (`audit verify --anchor`): `None` if the
/// record is not the anchor's.
pub fn check_anchor(anchor: &ChainHead, record: &ListAuditResponse) -> Option<Result<(), BrokenLink>> {
    (record.sequence == anchor.sequence).then(|| {
        if record.hash == anchor.hash {
            Ok(())
        } else {
            Err(BrokenLink::AnchorMismatch {
                sequence: anchor.sequence,
                reason: format!(
                    "its hash is {}, the anchor says {}",
                    hex::encode(&record.hash),
                    hex::encode(anchor.hash)
                ),
            })
        }
    })
}

/// Checks a verified chain against what peers witnessed: `hashes` holds the hash of every record
/// whose sequence number a witnessed head names (`None` for the chain's end past the last record).
pub fn check_witnessed(
    end: &ChainHead,
    witnessed: &[WitnessedHead],
    hash_at: impl Fn(u64) -> Option<[u8; 32]>,
) -> Result<(), BrokenLink> {
    for seen in witnessed {
        let signed_at = humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH
                + std::time::Duration::from_secs(u64::try_from(seen.signed_at).unwrap_or(0)),
        )
        .to_string();
        if seen.head.sequence > end.sequence {
            return Err(BrokenLink::BehindWitness {
                peer: seen.peer.clone(),
                found: end.sequence,
                first: end.sequence + 1,
                witnessed: seen.head.sequence,
                signed_at,
            });
        }
        if seen.head.sequence == 0 {
            continue;
        }
        let found = hash_at(seen.head.sequence);
        if found != Some(seen.head.hash) {
            return Err(BrokenLink::ForkFromWitness {
                peer: seen.peer.clone(),
                sequence: seen.head.sequence,
                witnessed_hash: hex::encode(seen.head.hash),
                found_hash: found.map(hex::encode).unwrap_or_else(|| "missing".into()),
                signed_at,
            });
        }
    }
    Ok(())
}

/// Verifies a whole chain against the head the node reported.
pub fn verify<'a>(
    records: impl IntoIterator<Item = &'a ListAuditResponse>,
    reported: Option<&ChainHead>,
) -> Result<ChainHead, BrokenLink> {
    let mut verifier = Verifier::new();
    for record in records {
        verifier.push(record)?;
    }
    verifier.finish(reported)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64) -> Vec<ListAuditResponse> {
        let mut head = ChainHead::default();
        (1..=n)
            .map(|i| {
                let mut record = ListAuditResponse {
                    at: Some(prost_types::Timestamp { seconds: 1_700_000_000 + i as i64, nanos: 5 }),
                    who: "alice (officer)".into(),
                    action: "Get".into(),
                    message_id: format!("id-{i}"),
                    details: "read".into(),
                    ..Default::default()
                };
                head = seal(&head, &mut record);
                record
            })
            .collect()
    }

    fn head_of(records: &[ListAuditResponse]) -> ChainHead {
        let last = records.last().unwrap();
        ChainHead { sequence: last.sequence, hash: last.hash.clone().try_into().unwrap() }
    }

    #[test]
    fn an_untouched_chain_verifies_to_its_head() {
        let records = chain(5);
        let head = head_of(&records);
        assert_eq!(verify(&records, Some(&head)), Ok(head));
        assert_eq!(verify(&[], Some(&ChainHead::default())), Ok(ChainHead::default()));
        assert_eq!(records[0].prev_hash, GENESIS_HASH.to_vec());
        assert_eq!(records[1].prev_hash, records[0].hash);
    }

    #[test]
    fn the_encoding_is_fixed() {
        // Any change to the encoding breaks every stored chain: this pins it.
        let record = ListAuditResponse {
            sequence: 1,
            at: Some(prost_types::Timestamp { seconds: 2, nanos: 3 }),
            who: "a".into(),
            action: "b".into(),
            message_id: String::new(),
            details: "cd".into(),
            prev_hash: vec![0xee; 2],
            ..Default::default()
        };
        let mut expected = b"hanoi247-audit-v1".to_vec();
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 1]);
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 3]);
        expected.extend_from_slice(&[0, 0, 0, 1, b'a', 0, 0, 0, 1, b'b', 0, 0, 0, 0, 0, 0, 0, 2, b'c', b'd']);
        expected.extend_from_slice(&[0, 0, 0, 2, 0xee, 0xee]);
        assert_eq!(canonical_encoding(&record), expected);
        // Moving bytes between neighbouring fields changes the encoding (length prefixes).
        let shifted = ListAuditResponse { who: "ab".into(), action: String::new(), ..record.clone() };
        assert_ne!(record_hash(&shifted), record_hash(&record));
    }

    #[test]
    fn a_changed_record_is_named_by_its_hash() {
        let mut records = chain(5);
        records[2].details = "nothing to see".into();
        let error = verify(&records, Some(&head_of(&records))).unwrap_err();
        assert!(matches!(error, BrokenLink::HashMismatch { sequence: 3, .. }), "{error}");
        assert!(error.to_string().starts_with("record 3: hash mismatch"), "{error}");
    }

    #[test]
    fn a_changed_and_rehashed_record_breaks_the_next_link() {
        let mut records = chain(5);
        records[2].who = "mallory (operator)".into();
        records[2].hash = record_hash(&records[2]).to_vec();
        let error = verify(&records, None).unwrap_err();
        assert_eq!(error, BrokenLink::BrokenPrevLink { sequence: 4, previous: 3 });
    }

    #[test]
    fn deleted_records_are_named_in_the_middle_at_the_start_and_at_the_end() {
        let records = chain(5);
        let head = head_of(&records);
        let mut middle = records.clone();
        middle.remove(2);
        assert_eq!(
            verify(&middle, Some(&head)).unwrap_err(),
            BrokenLink::Missing { sequence: 3, before: 2, found: 4 }
        );
        let error = verify(&records[1..], Some(&head)).unwrap_err();
        assert_eq!(error, BrokenLink::Missing { sequence: 1, before: 0, found: 2 });
        assert!(error.to_string().contains("record 1 is missing (deleted)"), "{error}");
        let error = verify(&records[..3], Some(&head)).unwrap_err();
        assert_eq!(error, BrokenLink::Truncated { first: 4, last: 5, found: 3 });
    }

    #[test]
    fn damaged_and_reordered_records_are_named() {
        let mut records = chain(4);
        records[1] =
            ListAuditResponse { sequence: 2, damaged: "invalid wire type".into(), ..Default::default() };
        let error = verify(&records, None).unwrap_err();
        assert!(matches!(&error, BrokenLink::Damaged { sequence: 2, .. }), "{error}");
        let mut records = chain(4);
        records.swap(1, 2);
        assert_eq!(
            verify(&records, None).unwrap_err(),
            BrokenLink::Missing { sequence: 2, before: 1, found: 3 }
        );
        let mut records = chain(3);
        records.insert(2, records[1].clone());
        assert_eq!(verify(&records, None).unwrap_err(), BrokenLink::OutOfOrder { sequence: 3, found: 2 });
    }

    #[test]
    fn heads_round_trip_and_anchors_are_checked() {
        let records = chain(3);
        let head = head_of(&records);
        assert_eq!(ChainHead::parse(&head.to_text()), Ok(head));
        assert_eq!(ChainHead::from_bytes(&head.to_bytes()), Some(head));
        assert_eq!(ChainHead::from_bytes(&[1, 2, 3]), None);
        assert!(ChainHead::parse("3:abc").unwrap_err().contains("64 digits"));
        assert!(ChainHead::parse("x").is_err());
        assert_eq!(check_anchor(&head, &records[0]), None);
        assert_eq!(check_anchor(&head, &records[2]), Some(Ok(())));
        let other = ChainHead { sequence: 2, hash: [7; 32] };
        assert!(matches!(
            check_anchor(&other, &records[1]),
            Some(Err(BrokenLink::AnchorMismatch { sequence: 2, .. }))
        ));
    }

    #[test]
    fn heads_peers_witnessed_name_a_cut_or_a_rewrite() {
        let records = chain(5);
        let hash_at = |records: &[ListAuditResponse]| {
            let records = records.to_vec();
            move |sequence: u64| {
                records.iter().find(|r| r.sequence == sequence).map(|r| r.hash.clone().try_into().unwrap())
            }
        };
        let witnessed = |head: ChainHead| WitnessedHead { peer: "FR".into(), head, signed_at: 1_800_000_000 };
        let seen = witnessed(head_of(&records[..4]));
        assert_eq!(WitnessedHead::parse(&seen.to_text()), Ok(seen.clone()));
        assert!(check_witnessed(&head_of(&records), std::slice::from_ref(&seen), hash_at(&records)).is_ok());

        // Cut to 2 records: the peer's head 4 is past the end.
        let error =
            check_witnessed(&head_of(&records[..2]), std::slice::from_ref(&seen), hash_at(&records[..2]))
                .unwrap_err();
        assert!(
            matches!(error, BrokenLink::BehindWitness { found: 2, first: 3, witnessed: 4, .. }),
            "{error}"
        );
        assert!(
            error.to_string().starts_with(
                "the log ends at record 2 but FR witnessed head 4 signed at 2027-01-15T08:00:00Z"
            ),
            "{error}"
        );

        // Rewritten from record 3 on, as long as before: record 4 is not the one witnessed.
        let mut rewritten = records[..2].to_vec();
        let mut head = head_of(&rewritten);
        for i in 3..=5 {
            let mut record = ListAuditResponse {
                who: "mallory".into(),
                message_id: format!("x{i}"),
                ..Default::default()
            };
            head = seal(&head, &mut record);
            rewritten.push(record);
        }
        let error = check_witnessed(&head, &[seen], hash_at(&rewritten)).unwrap_err();
        assert!(matches!(error, BrokenLink::ForkFromWitness { sequence: 4, .. }), "{error}");
        assert!(WitnessedHead::parse("FR 4:zz 1").is_err());
    }

    #[test]
    fn long_details_are_cut_on_a_character_boundary() {
        let mut record =
            ListAuditResponse { details: "é".repeat(MAX_DETAILS_CHARS + 5), ..Default::default() };
        seal(&ChainHead::default(), &mut record);
        assert_eq!(record.details.chars().count(), MAX_DETAILS_CHARS + 1);
    }
}
