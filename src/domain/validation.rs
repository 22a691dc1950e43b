//! What makes an envelope acceptable, checked the same way whether it comes from this node's
//! desk (`Submit`) or from a peer (`Deliver`). Every refusal names the field at fault.

use uuid::Uuid;

use crate::proto::{
    Envelope, EnvelopeKind, HandlingCode, Outcome, OutcomeKind, Precedence, PreservationFollowUp,
    PreservationRequest, RequestType,
};
use serde::{Deserialize, Serialize};

/// Longest subject, in characters (the default of `limits.max_subject_chars`).
pub const MAX_SUBJECT_CHARS: usize = 200;
/// Longest case reference, in characters (the default of `limits.max_case_reference_chars`).
pub const MAX_CASE_REFERENCE_CHARS: usize = 64;
/// Shortest preservation period the Convention's requests ask for, in days.
pub const MIN_PRESERVATION_DAYS: u32 = 60;
/// Largest envelope, encoded. Content travels out of band (attachments are digests), so a
/// request is text: 1 MiB is generous and keeps every store write and batch small. The default
/// of `limits.max_envelope_bytes`.
pub const MAX_ENVELOPE_BYTES: usize = 1024 * 1024;
/// Most attachments one envelope may list (the default of `limits.max_attachments`).
pub const MAX_ATTACHMENTS: usize = 64;
/// Largest attachment, in bytes (the default of `limits.max_attachment_bytes`).
pub const MAX_ATTACHMENT_BYTES: u64 = 64 * 1024 * 1024;
/// Largest `Deliver` batch, encoded: receivers refuse larger calls (their decode limit).
pub const MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;

/// Longest identifier field (a UUID has 36 characters, a node code 2).
const MAX_IDENTIFIER_BYTES: usize = 64;

/// A field's value is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// The field's name as in the proto, e.g. `preservation.offence`.
    pub field: String,
    /// What is wrong and what would be right.
    pub message: String,
    /// The value is well-formed but over a size limit (RESOURCE_EXHAUSTED rather than
    /// INVALID_ARGUMENT).
    pub over_limit: bool,
}

impl FieldError {
    /// The gRPC code of this refusal, for a whole call and for one envelope's `Refusal` alike:
    /// RESOURCE_EXHAUSTED when a well-formed value is over a limit, else INVALID_ARGUMENT.
    pub fn code(&self) -> tonic::Code {
        if self.over_limit { tonic::Code::ResourceExhausted } else { tonic::Code::InvalidArgument }
    }

    /// A refusal of `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into(), over_limit: false }
    }

    /// `field` is over a size limit.
    pub fn over_limit(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into(), over_limit: true }
    }
}

/// Checks everything an envelope must satisfy on its own (not against a store or directory),
/// within `limits` (the node's `[limits]`).
pub fn check_envelope(envelope: &Envelope, limits: &Limits) -> Result<(), FieldError> {
    let size = prost::Message::encoded_len(envelope);
    if size > limits.max_envelope_bytes {
        return Err(FieldError::over_limit(
            "envelope",
            format!(
                "{size} bytes encoded, at most {} (limits.max_envelope_bytes): send large content out of band as an attachment digest",
                limits.max_envelope_bytes
            ),
        ));
    }
    if envelope.attachments.len() > limits.max_attachments {
        return Err(FieldError::over_limit(
            "attachments",
            format!(
                "{} attachments, at most {} (limits.max_attachments)",
                envelope.attachments.len(),
                limits.max_attachments
            ),
        ));
    }
    check_lengths(envelope, limits)?;
    check_characters(envelope)?;
    Uuid::parse_str(&envelope.id).map_err(|_| FieldError::new("id", "must be a UUID"))?;
    for (field, code) in [("origin", &envelope.origin), ("destination", &envelope.destination)] {
        code.parse::<crate::domain::identity::NodeCode>()
            .map_err(|e| FieldError::new(field, e.to_string()))?;
    }
    let kind = EnvelopeKind::try_from(envelope.kind).unwrap_or(EnvelopeKind::Unspecified);
    if kind == EnvelopeKind::Unspecified {
        return Err(FieldError::new("kind", "required"));
    }
    if RequestType::try_from(envelope.request_type).unwrap_or(RequestType::Unspecified)
        == RequestType::Unspecified
    {
        return Err(FieldError::new(
            "request_type",
            "required: one of PRESERVATION, TRAFFIC_DATA_DISCLOSURE, TECHNICAL_ADVICE, LEGAL_INFORMATION, EVIDENCE_COLLECTION, LOCATE_PERSON, OTHER",
        ));
    }
    if Precedence::try_from(envelope.precedence).unwrap_or(Precedence::Unspecified) == Precedence::Unspecified
    {
        return Err(FieldError::new("precedence", "required: one of FLASH, IMMEDIATE, PRIORITY, ROUTINE"));
    }
    if envelope.case_reference.trim().is_empty() {
        return Err(FieldError::new("case_reference", "required"));
    }
    if envelope.subject.trim().is_empty() {
        return Err(FieldError::new("subject", "required: one line a desk officer reads first"));
    }
    if envelope.subject.contains(['\n', '\r']) {
        return Err(FieldError::new("subject", "must be one line"));
    }
    check_language(&envelope.language)?;
    if envelope.created_at.is_none() {
        return Err(FieldError::new("created_at", "required"));
    }
    if envelope.expires_at.is_none() {
        return Err(FieldError::new("expires_at", "required"));
    }
    if kind == EnvelopeKind::Request {
        if !envelope.in_reply_to.is_empty() {
            Uuid::parse_str(&envelope.in_reply_to)
                .map_err(|_| FieldError::new("in_reply_to", "must be a UUID"))?;
        }
    } else {
        Uuid::parse_str(&envelope.in_reply_to)
            .map_err(|_| FieldError::new("in_reply_to", "required on replies: the UUID of the request"))?;
    }
    for (i, attachment) in envelope.attachments.iter().enumerate() {
        if attachment.name.trim().is_empty() {
            return Err(FieldError::new(format!("attachments[{i}].name"), "required"));
        }
        if attachment.media_type.trim().is_empty() {
            return Err(FieldError::new(format!("attachments[{i}].media_type"), "required, e.g. text/csv"));
        }
        if attachment.sha256.len() != 32 {
            return Err(FieldError::new(format!("attachments[{i}].sha256"), "must be exactly 32 bytes"));
        }
    }
    check_attachment_sizes(envelope, limits)?;
    let handling = HandlingCode::try_from(envelope.handling_code).unwrap_or(HandlingCode::Unspecified);
    if handling == HandlingCode::Unspecified {
        return Err(FieldError::new("handling_code", "required: H0, H1, H2 or H3"));
    }
    check_h3_restrictions(handling, &envelope.handling_restrictions)?;
    if let Some(follow_up) = &envelope.follow_up {
        check_follow_up(follow_up, envelope, kind, limits)?;
    }
    let preservation_type = envelope.request_type == RequestType::Preservation as i32;
    match &envelope.preservation {
        Some(preservation) if preservation_type => check_preservation(preservation)?,
        Some(_) => return Err(FieldError::new("preservation", "only for PRESERVATION requests")),
        None if preservation_type && kind == EnvelopeKind::Request && envelope.in_reply_to.is_empty() => {
            return Err(FieldError::new(
                "preservation",
                "required for a PRESERVATION request that starts a chain (requesting_authority, offence, facts, data_to_preserve, link_to_offence, custodian_or_location, necessity, mutual_legal_assistance_to_follow, preservation_days)",
            ));
        }
        None => {}
    }
    if let Some(outcome) = &envelope.outcome {
        if kind != EnvelopeKind::Response {
            return Err(FieldError::new("outcome", "only on responses"));
        }
        check_outcome(outcome, envelope.request_type(), limits)?;
    }
    Ok(())
}

/// A follow-up of a preservation: on a PRESERVATION request that continues a chain, exactly one
/// of an extension's date and the mutual legal assistance request's reference.
fn check_follow_up(
    follow_up: &PreservationFollowUp,
    envelope: &Envelope,
    kind: EnvelopeKind,
    limits: &Limits,
) -> Result<(), FieldError> {
    let reference = &follow_up.mla_reference;
    check_chars("follow_up.mla_reference", reference, limits.max_text_chars, "max_text_chars")?;
    check_safe_text("follow_up.mla_reference", reference, false)?;
    if kind != EnvelopeKind::Request
        || envelope.request_type() != RequestType::Preservation
        || envelope.in_reply_to.is_empty()
    {
        return Err(FieldError::new(
            "follow_up",
            "only on a PRESERVATION request that continues a preservation (in_reply_to)",
        ));
    }
    match (&follow_up.extend_until, reference.trim().is_empty()) {
        (Some(until), true) => check_timestamp("follow_up.extend_until", until),
        (None, false) => Ok(()),
        (Some(_), false) => Err(FieldError::new(
            "follow_up.mla_reference",
            "an extension (extend_until) or the mutual legal assistance request sent, not both",
        )),
        (None, true) => Err(FieldError::new(
            "follow_up.extend_until",
            "required: the new date (an extension), or mla_reference (the mutual legal assistance request sent)",
        )),
    }
}

/// Whether `kind` says the request was carried out (wholly or in part).
pub fn is_executed(kind: OutcomeKind) -> bool {
    matches!(kind, OutcomeKind::Executed | OutcomeKind::PartlyExecuted)
}

/// The shape of a response's typed outcome for a request of `request_type`, the same at the desk
/// (`Respond`) and from a peer (`Deliver`): a kind, the fields that kind needs and no field it
/// does not take. Times against the clock are [`check_preserved_until`]'s, at the desk only (a
/// response may arrive long after it was made).
pub fn check_outcome(
    outcome: &Outcome,
    request_type: RequestType,
    limits: &Limits,
) -> Result<(), FieldError> {
    let texts = [
        ("outcome.reference", &outcome.reference, false),
        ("outcome.refusal_grounds", &outcome.refusal_grounds, true),
        ("outcome.forwarded_to", &outcome.forwarded_to, false),
    ];
    for (field, value, multiline) in texts {
        check_chars(field, value, limits.max_text_chars, "max_text_chars")?;
        check_safe_text(field, value, multiline)?;
    }
    let kind = match OutcomeKind::try_from(outcome.kind) {
        Ok(OutcomeKind::Unspecified) | Err(_) => {
            return Err(FieldError::new(
                "outcome.kind",
                "required: one of EXECUTED, PARTLY_EXECUTED, REFUSED, PRESERVATION_NOT_POSSIBLE, MORE_INFORMATION_NEEDED, FORWARDED",
            ));
        }
        Ok(kind) => kind,
    };
    let grounds = !outcome.refusal_grounds.trim().is_empty();
    match kind {
        OutcomeKind::Refused if !grounds => {
            return Err(FieldError::new("outcome.refusal_grounds", "required when the outcome is REFUSED"));
        }
        OutcomeKind::Refused | OutcomeKind::PreservationNotPossible => {}
        _ if grounds => {
            return Err(FieldError::new(
                "outcome.refusal_grounds",
                "only for REFUSED or PRESERVATION_NOT_POSSIBLE",
            ));
        }
        _ => {}
    }
    let forwarded = !outcome.forwarded_to.trim().is_empty();
    if kind == OutcomeKind::Forwarded && !forwarded {
        return Err(FieldError::new(
            "outcome.forwarded_to",
            "required when the outcome is FORWARDED: the authority",
        ));
    }
    if kind != OutcomeKind::Forwarded && forwarded {
        return Err(FieldError::new("outcome.forwarded_to", "only for FORWARDED"));
    }
    let executed_preservation = is_executed(kind) && request_type == RequestType::Preservation;
    match &outcome.preserved_until {
        None if executed_preservation => {
            return Err(FieldError::new(
                "outcome.preserved_until",
                "required when a preservation is EXECUTED or PARTLY_EXECUTED: until when the data is kept",
            ));
        }
        Some(_) if !executed_preservation => {
            return Err(FieldError::new(
                "outcome.preserved_until",
                "only for an EXECUTED or PARTLY_EXECUTED preservation",
            ));
        }
        Some(until) => check_timestamp("outcome.preserved_until", until)?,
        None => {}
    }
    if let Some(traffic) = &outcome.traffic_data {
        let field = "outcome.traffic_data.provider_or_path";
        check_chars(field, &traffic.provider_or_path, limits.max_text_chars, "max_text_chars")?;
        check_safe_text(field, &traffic.provider_or_path, true)?;
        for (field, value) in [
            ("outcome.traffic_data.third_state", &traffic.third_state),
            ("outcome.traffic_data.preservation_id", &traffic.preservation_id),
        ] {
            if value.len() > MAX_IDENTIFIER_BYTES {
                return Err(FieldError::new(
                    field,
                    format!("{} bytes: not a UUID or country code", value.len()),
                ));
            }
        }
        if !is_executed(kind)
            || !matches!(request_type, RequestType::Preservation | RequestType::TrafficDataDisclosure)
        {
            return Err(FieldError::new(
                "outcome.traffic_data",
                "only with an EXECUTED or PARTLY_EXECUTED preservation or traffic data disclosure",
            ));
        }
        if traffic.provider_or_path.trim().is_empty() {
            return Err(FieldError::new(field, "required: the provider or path the traffic data identifies"));
        }
        if !traffic.third_state.is_empty() {
            traffic.third_state.parse::<crate::domain::identity::NodeCode>().map_err(|_| {
                FieldError::new(
                    "outcome.traffic_data.third_state",
                    "an ISO 3166-1 alpha-2 code in capitals, e.g. DE",
                )
            })?;
        }
        if !traffic.preservation_id.is_empty() {
            Uuid::parse_str(&traffic.preservation_id)
                .map_err(|_| FieldError::new("outcome.traffic_data.preservation_id", "must be a UUID"))?;
        }
    }
    Ok(())
}

/// `outcome.preserved_until` against the answering desk's clock: in the future, and for a
/// preservation that starts a case ([`Envelope::in_reply_to`] empty) at least
/// [`MIN_PRESERVATION_DAYS`] after `request` was made, the Convention's minimum period (refused,
/// not warned: a shorter period must be an extension, which chains to the preservation).
pub fn check_preserved_until(
    outcome: &Outcome,
    request: &Envelope,
    now: std::time::SystemTime,
) -> Result<(), FieldError> {
    let Some(until) = &outcome.preserved_until else { return Ok(()) };
    let until = crate::domain::timestamp::to_system(until);
    let field = "outcome.preserved_until";
    if until <= now {
        return Err(FieldError::new(field, "must be in the future"));
    }
    if request.in_reply_to.is_empty()
        && let Some(created) = &request.created_at
    {
        let minimum = crate::domain::timestamp::plus(
            crate::domain::timestamp::to_system(created),
            std::time::Duration::from_secs(u64::from(MIN_PRESERVATION_DAYS) * 86_400),
        );
        if until < minimum {
            return Err(FieldError::new(
                field,
                format!(
                    "at least {MIN_PRESERVATION_DAYS} days after the request was made ({} or later)",
                    crate::domain::timestamp::rfc3339(&crate::domain::timestamp::from_system(minimum))
                ),
            ));
        }
    }
    Ok(())
}

/// Every text field of `envelope` within its length limit, in characters. Run before the other
/// checks, so that no check (or refusal message) ever works on an oversized value.
fn check_lengths(envelope: &Envelope, limits: &Limits) -> Result<(), FieldError> {
    // Identifiers have a fixed shape (a UUID, a node code): a long one is refused here, before
    // any refusal message quotes it.
    for (field, value) in [
        ("id", &envelope.id),
        ("origin", &envelope.origin),
        ("destination", &envelope.destination),
        ("in_reply_to", &envelope.in_reply_to),
    ] {
        if value.len() > MAX_IDENTIFIER_BYTES {
            return Err(FieldError::new(field, format!("{} bytes: not a UUID or node code", value.len())));
        }
    }
    check_chars(
        "case_reference",
        &envelope.case_reference,
        limits.max_case_reference_chars,
        "max_case_reference_chars",
    )?;
    check_chars("subject", &envelope.subject, limits.max_subject_chars, "max_subject_chars")?;
    check_chars("body", &envelope.body, limits.max_body_chars, "max_body_chars")?;
    check_chars("language", &envelope.language, limits.max_name_chars, "max_name_chars")?;
    check_chars(
        "handling_restrictions",
        &envelope.handling_restrictions,
        limits.max_text_chars,
        "max_text_chars",
    )?;
    for (i, attachment) in envelope.attachments.iter().enumerate() {
        for (name, value) in [("name", &attachment.name), ("media_type", &attachment.media_type)] {
            check_chars(format!("attachments[{i}].{name}"), value, limits.max_name_chars, "max_name_chars")?;
        }
    }
    if let Some(p) = &envelope.preservation {
        for (name, value) in preservation_texts(p) {
            check_chars(format!("preservation.{name}"), value, limits.max_text_chars, "max_text_chars")?;
        }
    }
    Ok(())
}

/// H3 ("restricted as stated") needs the restrictions in words.
fn check_h3_restrictions(handling: HandlingCode, restrictions: &str) -> Result<(), FieldError> {
    if handling == HandlingCode::H3 && restrictions.trim().is_empty() {
        return Err(FieldError::new("handling_restrictions", "required when handling_code is H3"));
    }
    Ok(())
}

/// The handling conditions the one who answers sets for a response (`Respond`): unset, the
/// request's own apply (returns `None`); set, a known code, with restrictions in words for H3,
/// within `limits.max_text_chars`. Restrictions without a code are refused: which code they
/// qualify would be a guess.
pub fn check_response_handling(
    code: i32,
    restrictions: &str,
    limits: &Limits,
) -> Result<Option<HandlingCode>, FieldError> {
    let Ok(handling) = HandlingCode::try_from(code) else {
        return Err(FieldError::new(
            "handling_code",
            format!("{code} is not a handling code (H0, H1, H2 or H3)"),
        ));
    };
    if handling == HandlingCode::Unspecified {
        if !restrictions.trim().is_empty() {
            return Err(FieldError::new(
                "handling_restrictions",
                "given without handling_code: set the code they qualify (H3 for restrictions in words)",
            ));
        }
        return Ok(None);
    }
    check_h3_restrictions(handling, restrictions)?;
    check_chars("handling_restrictions", restrictions, limits.max_text_chars, "max_text_chars")?;
    check_safe_text("handling_restrictions", restrictions, true)?;
    Ok(Some(handling))
}

/// A text a desk client gives for the body of a reply envelope (`note` of `Acknowledge`, `text`
/// of `Respond`, `reason` of `Cancel`) within `limits.max_body_chars`, with no character a body
/// may not hold.
pub fn check_reply_text(field: &str, text: &str, limits: &Limits) -> Result<(), FieldError> {
    check_chars(field, text, limits.max_body_chars, "max_body_chars")?;
    check_safe_text(field, text, true)
}

/// Every text field free of the characters `domain::text` refuses: single-line fields (subject,
/// case reference, language, attachment names and media types) hold no control at all; the
/// multi-line ones (body, handling restrictions, preservation texts) may hold tab and newlines.
fn check_characters(envelope: &Envelope) -> Result<(), FieldError> {
    for (field, value) in [
        ("case_reference", &envelope.case_reference),
        ("subject", &envelope.subject),
        ("language", &envelope.language),
    ] {
        check_safe_text(field, value, false)?;
    }
    check_safe_text("body", &envelope.body, true)?;
    check_safe_text("handling_restrictions", &envelope.handling_restrictions, true)?;
    for (i, attachment) in envelope.attachments.iter().enumerate() {
        for (name, value) in [("name", &attachment.name), ("media_type", &attachment.media_type)] {
            check_safe_text(&format!("attachments[{i}].{name}"), value, false)?;
        }
    }
    if let Some(p) = &envelope.preservation {
        for (name, value) in preservation_texts(p) {
            check_safe_text(&format!("preservation.{name}"), value, true)?;
        }
    }
    Ok(())
}

/// `value` holds no character `domain::text` refuses (on one line, or `multiline`); the refusal
/// names the field, the character's code point and its position, never the text itself.
pub fn check_safe_text(field: &str, value: &str, multiline: bool) -> Result<(), FieldError> {
    match crate::domain::text::first_unsafe(value, multiline) {
        None => Ok(()),
        Some((position, c)) => {
            let what = if matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}') {
                "a bidi override or isolate"
            } else {
                "a control character"
            };
            let allowed = if multiline { " (tab and newlines are allowed)" } else { " (one line of text)" };
            Err(FieldError::new(
                field,
                format!("U+{:04X} at character {position} is {what}: not allowed{allowed}", u32::from(c)),
            ))
        }
    }
}

/// The times of `envelope` against `now` and `limits`: each a real instant (`nanos` in
/// `0..1_000_000_000`, from 1970 to 9999), `created_at` at most `max_clock_skew` ahead of `now`
/// (a queued envelope may arrive long after it was created, so the past is not bounded), and
/// `expires_at` after `created_at` by at most `max_lifetime`. Run after [`check_envelope`].
pub fn check_times(
    envelope: &Envelope,
    now: std::time::SystemTime,
    limits: &Limits,
) -> Result<(), FieldError> {
    use crate::domain::timestamp;
    let created = envelope.created_at.as_ref().ok_or_else(|| FieldError::new("created_at", "required"))?;
    let expires = envelope.expires_at.as_ref().ok_or_else(|| FieldError::new("expires_at", "required"))?;
    check_timestamp("created_at", created)?;
    check_timestamp("expires_at", expires)?;
    let now = timestamp::from_system(now);
    let ahead = timestamp::nanos_between(&now, created);
    if ahead > limits.max_clock_skew.as_nanos() as i128 {
        return Err(FieldError::new(
            "created_at",
            format!(
                "{} is {}s ahead of this node's clock, at most {} (limits.max_clock_skew)",
                timestamp::rfc3339(created),
                ahead / 1_000_000_000,
                humantime::format_duration(limits.max_clock_skew)
            ),
        ));
    }
    let lifetime = timestamp::nanos_between(created, expires);
    if lifetime <= 0 {
        return Err(FieldError::new("expires_at", "must be after created_at"));
    }
    if lifetime > limits.max_lifetime.as_nanos() as i128 {
        return Err(FieldError::new(
            "expires_at",
            format!(
                "{} is more than {} after created_at (limits.max_lifetime)",
                timestamp::rfc3339(expires),
                humantime::format_duration(limits.max_lifetime)
            ),
        ));
    }
    Ok(())
}

/// A timestamp a client or peer gave: a real instant this node can compute with and show.
pub fn check_timestamp(field: &str, value: &prost_types::Timestamp) -> Result<(), FieldError> {
    if !(0..1_000_000_000).contains(&value.nanos) {
        return Err(FieldError::new(field, format!("nanos {} is not in 0..1000000000", value.nanos)));
    }
    if !crate::domain::timestamp::is_valid(value) {
        return Err(FieldError::new(
            field,
            format!("seconds {} is not a time from 1970 to 9999", value.seconds),
        ));
    }
    Ok(())
}

/// A `Deliver` call carries at most `limits.max_batch_envelopes` envelopes.
pub fn check_batch(envelopes: usize, limits: &Limits) -> Result<(), FieldError> {
    if envelopes > limits.max_batch_envelopes {
        return Err(FieldError::over_limit(
            "envelopes",
            format!(
                "{envelopes} envelopes in one Deliver call, at most {} (limits.max_batch_envelopes): send smaller batches",
                limits.max_batch_envelopes
            ),
        ));
    }
    Ok(())
}

/// `value` has at most `max` characters; the refusal names the field and the limit's key.
fn check_chars(field: impl Into<String>, value: &str, max: usize, key: &str) -> Result<(), FieldError> {
    // A string has at least as many bytes as characters: short ones need no counting.
    if value.len() <= max {
        return Ok(());
    }
    let count = value.chars().count();
    if count <= max {
        return Ok(());
    }
    Err(FieldError::over_limit(field, format!("{count} characters, at most {max} (limits.{key})")))
}

/// The free-text fields of a preservation request, by proto name.
fn preservation_texts(p: &PreservationRequest) -> [(&'static str, &String); 7] {
    [
        ("requesting_authority", &p.requesting_authority),
        ("offence", &p.offence),
        ("facts", &p.facts),
        ("data_to_preserve", &p.data_to_preserve),
        ("link_to_offence", &p.link_to_offence),
        ("custodian_or_location", &p.custodian_or_location),
        ("necessity", &p.necessity),
    ]
}

/// The typed fields of a preservation request: every one required.
pub fn check_preservation(p: &PreservationRequest) -> Result<(), FieldError> {
    for (name, value) in preservation_texts(p) {
        if value.trim().is_empty() {
            return Err(FieldError::new(format!("preservation.{name}"), "required"));
        }
    }
    if !p.mutual_legal_assistance_to_follow {
        return Err(FieldError::new(
            "preservation.mutual_legal_assistance_to_follow",
            "must be true: preservation is granted pending a mutual legal assistance request",
        ));
    }
    if p.preservation_days < MIN_PRESERVATION_DAYS {
        return Err(FieldError::new(
            "preservation.preservation_days",
            format!("at least {MIN_PRESERVATION_DAYS} days, was {}", p.preservation_days),
        ));
    }
    Ok(())
}

/// A BCP 47 tag in its common shape: a 2–3 letter language, then subtags of 1–8 letters/digits.
fn check_language(tag: &str) -> Result<(), FieldError> {
    let mut parts = tag.split('-');
    let language_ok = parts
        .next()
        .is_some_and(|l| (2..=3).contains(&l.len()) && l.bytes().all(|b| b.is_ascii_alphabetic()));
    let rest_ok = parts.all(|s| (1..=8).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric()));
    if language_ok && rest_ok {
        Ok(())
    } else {
        Err(FieldError::new("language", format!("'{tag}' is not a BCP 47 tag such as en, fr or vi")))
    }
}

/// Checks what an attachment names: a name and a media type, each short and printable (the
/// rules of an envelope's attachments); the fields are named after `prefix` (e.g.
/// "attachments[0].").
pub fn check_attachment_names(
    prefix: &str,
    attachment: &crate::proto::Attachment,
    limits: &Limits,
) -> Result<(), FieldError> {
    for (name, value) in [("name", &attachment.name), ("media_type", &attachment.media_type)] {
        let field = format!("{prefix}{name}");
        if value.trim().is_empty() {
            return Err(FieldError::new(field, "required"));
        }
        check_chars(field.clone(), value, limits.max_name_chars, "max_name_chars")?;
        check_safe_text(&field, value, false)?;
    }
    Ok(())
}

/// Refuses attachments over `limits.max_attachment_bytes` each or
/// `limits.max_envelope_attachment_bytes` together (the sizes the envelope states).
pub fn check_attachment_sizes(envelope: &Envelope, limits: &Limits) -> Result<(), FieldError> {
    let mut total: u64 = 0;
    for (i, attachment) in envelope.attachments.iter().enumerate() {
        if attachment.size_bytes > limits.max_attachment_bytes {
            return Err(FieldError::over_limit(
                format!("attachments[{i}].size_bytes"),
                format!(
                    "{} bytes, at most {} (limits.max_attachment_bytes)",
                    attachment.size_bytes, limits.max_attachment_bytes
                ),
            ));
        }
        total = total.saturating_add(attachment.size_bytes);
    }
    if total > limits.max_envelope_attachment_bytes {
        return Err(FieldError::over_limit(
            "attachments",
            format!(
                "{total} bytes together, at most {} (limits.max_envelope_attachment_bytes)",
                limits.max_envelope_attachment_bytes
            ),
        ));
    }
    Ok(())
}

/// Refuses a list filter `field` with more than `limits.max_filter_values` values.
pub fn check_filter(field: &str, values: usize, limits: &Limits) -> Result<(), FieldError> {
    if values > limits.max_filter_values {
        return Err(FieldError::over_limit(
            field,
            format!("{values} values, at most {} (limits.max_filter_values)", limits.max_filter_values),
        ));
    }
    Ok(())
}

/// Input limits (`[limits]`): sizes and counts beyond which a desk call or an envelope from a
/// peer is refused with RESOURCE_EXHAUSTED naming the limit. Every node of a network should use
/// the same values: a receiver with smaller limits refuses what a sender accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest envelope, in encoded bytes. Default 1 MiB; at most 4 MiB, so that an envelope
    /// always fits in one `Deliver` batch.
    #[serde(default = "default_max_envelope_bytes")]
    pub max_envelope_bytes: usize,
    /// Most envelopes one `Deliver` call may carry. Default 256; keep it at least the
    /// `delivery.batch_size` of every peer (default 64).
    #[serde(default = "default_max_batch_envelopes")]
    pub max_batch_envelopes: usize,
    /// Most attachments one envelope may list. Default 64.
    #[serde(default = "default_max_attachments")]
    pub max_attachments: usize,
    /// Largest attachment, in bytes: an upload beyond it is refused and nothing kept. Default
    /// 64 MiB.
    #[serde(default = "default_max_attachment_bytes")]
    pub max_attachment_bytes: u64,
    /// Largest total of one envelope's attachments, in bytes. Default 256 MiB.
    #[serde(default = "default_max_envelope_attachment_bytes")]
    pub max_envelope_attachment_bytes: u64,
    /// Longest subject, in characters. Default 200.
    #[serde(default = "default_max_subject_chars")]
    pub max_subject_chars: usize,
    /// Longest case reference, in characters. Default 64.
    #[serde(default = "default_max_case_reference_chars")]
    pub max_case_reference_chars: usize,
    /// Longest body, in characters; also the acknowledgement note, the response text and the
    /// cancellation reason, which travel as the body of their envelope. Default 262144.
    #[serde(default = "default_max_body_chars")]
    pub max_body_chars: usize,
    /// Longest free-text field other than the body: `handling_restrictions` and each field of a
    /// preservation request. Default 8192.
    #[serde(default = "default_max_text_chars")]
    pub max_text_chars: usize,
    /// Longest short name: an attachment's name and media type, the language tag. Default 256.
    #[serde(default = "default_max_name_chars")]
    pub max_name_chars: usize,
    /// How far ahead of this node's clock an envelope's `created_at` may be (the sender's clock
    /// running fast). Default 5 minutes. Only the future is bounded: a queued envelope may
    /// arrive long after it was created.
    #[serde(default = "default_max_clock_skew", with = "humantime_serde")]
    pub max_clock_skew: std::time::Duration,
    /// Longest time from an envelope's `created_at` to its `expires_at`. Default 365 days; at
    /// least `delivery.default_expiry`.
    #[serde(default = "default_max_lifetime", with = "humantime_serde")]
    pub max_lifetime: std::time::Duration,
    /// Connections open at once on each listener (peer, desk, console), handshakes included;
    /// one more is closed at once, before its handshake. Default 1024.
    #[serde(default = "default_max_connections_per_listener")]
    pub max_connections_per_listener: usize,
    /// TLS handshakes under way at once on each listener; one more is closed at once. Default 64.
    #[serde(default = "default_max_handshakes_per_listener")]
    pub max_handshakes_per_listener: usize,
    /// Connections open at once from one IP address on the peer listener. Default 32.
    #[serde(default = "default_max_peer_connections_per_address")]
    pub max_peer_connections_per_address: usize,
    /// How long a TLS handshake may take before the connection is closed. Default 10s.
    #[serde(default = "default_handshake_timeout", with = "humantime_serde")]
    pub handshake_timeout: std::time::Duration,
    /// Concurrent HTTP/2 streams (calls) per connection on both gRPC listeners. Default 64.
    #[serde(default = "default_max_streams_per_connection")]
    pub max_streams_per_connection: u32,
    /// How long a gRPC call may take to answer on both listeners (then CANCELLED, "Timeout expired").
    /// A streaming call (`Watch`, `Backup`, `ListAudit`) answers when its stream starts, so
    /// the stream itself is not cut. Default 30s.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: std::time::Duration,
    /// Desk calls per second one desk client may make on average (gRPC and console together);
    /// beyond it a call is refused with RESOURCE_EXHAUSTED saying when to retry. Default 200.
    #[serde(default = "default_desk_calls_per_second")]
    pub desk_calls_per_second: u32,
    /// Desk calls one client may make at once above its rate. Default 2000.
    #[serde(default = "default_desk_call_burst")]
    pub desk_call_burst: u32,
    /// Most values in one list filter (`states`, `precedences`, `peers`, ...). Default 32.
    #[serde(default = "default_max_filter_values")]
    pub max_filter_values: usize,
    /// `Watch` calls and console event streams open at once per desk client. Default 8.
    #[serde(default = "default_max_streams_per_client")]
    pub max_streams_per_client: usize,
    /// Repeated audit records (the same client, action, message and outcome) within this
    /// interval are written as one record with a count at its end. Default 60s.
    #[serde(default = "default_audit_aggregation_interval", with = "humantime_serde")]
    pub audit_aggregation_interval: std::time::Duration,
    /// At most one WARN line per listener per interval about refused connections and
    /// handshakes, with the count of those not logged. Default 10s.
    #[serde(default = "default_refusal_log_interval", with = "humantime_serde")]
    pub refusal_log_interval: std::time::Duration,
}

fn default_max_clock_skew() -> std::time::Duration {
    std::time::Duration::from_secs(5 * 60)
}
fn default_max_lifetime() -> std::time::Duration {
    std::time::Duration::from_secs(365 * 24 * 3600)
}

fn default_max_envelope_bytes() -> usize {
    MAX_ENVELOPE_BYTES
}
fn default_max_batch_envelopes() -> usize {
    256
}
fn default_max_attachments() -> usize {
    MAX_ATTACHMENTS
}
fn default_max_attachment_bytes() -> u64 {
    MAX_ATTACHMENT_BYTES
}
fn default_max_envelope_attachment_bytes() -> u64 {
    4 * MAX_ATTACHMENT_BYTES
}
fn default_max_subject_chars() -> usize {
    MAX_SUBJECT_CHARS
}
fn default_max_case_reference_chars() -> usize {
    MAX_CASE_REFERENCE_CHARS
}
fn default_max_body_chars() -> usize {
    256 * 1024
}
fn default_max_text_chars() -> usize {
    8 * 1024
}
fn default_max_name_chars() -> usize {
    256
}
fn default_max_connections_per_listener() -> usize {
    1024
}
fn default_max_handshakes_per_listener() -> usize {
    64
}
fn default_max_peer_connections_per_address() -> usize {
    32
}
fn default_handshake_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(10)
}
fn default_max_streams_per_connection() -> u32 {
    64
}
fn default_request_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(30)
}
fn default_desk_calls_per_second() -> u32 {
    200
}
fn default_desk_call_burst() -> u32 {
    2000
}
fn default_max_filter_values() -> usize {
    32
}
fn default_max_streams_per_client() -> usize {
    8
}
fn default_audit_aggregation_interval() -> std::time::Duration {
    std::time::Duration::from_secs(60)
}
fn default_refusal_log_interval() -> std::time::Duration {
    std::time::Duration::from_secs(10)
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_envelope_bytes: default_max_envelope_bytes(),
            max_batch_envelopes: default_max_batch_envelopes(),
            max_attachments: default_max_attachments(),
            max_attachment_bytes: default_max_attachment_bytes(),
            max_envelope_attachment_bytes: default_max_envelope_attachment_bytes(),
            max_subject_chars: default_max_subject_chars(),
            max_case_reference_chars: default_max_case_reference_chars(),
            max_body_chars: default_max_body_chars(),
            max_text_chars: default_max_text_chars(),
            max_name_chars: default_max_name_chars(),
            max_clock_skew: default_max_clock_skew(),
            max_lifetime: default_max_lifetime(),
            max_connections_per_listener: default_max_connections_per_listener(),
            max_handshakes_per_listener: default_max_handshakes_per_listener(),
            max_peer_connections_per_address: default_max_peer_connections_per_address(),
            handshake_timeout: default_handshake_timeout(),
            max_streams_per_connection: default_max_streams_per_connection(),
            request_timeout: default_request_timeout(),
            desk_calls_per_second: default_desk_calls_per_second(),
            desk_call_burst: default_desk_call_burst(),
            max_filter_values: default_max_filter_values(),
            max_streams_per_client: default_max_streams_per_client(),
            audit_aggregation_interval: default_audit_aggregation_interval(),
            refusal_log_interval: default_refusal_log_interval(),
        }
    }
}

impl Limits {
    /// Largest `max_envelope_bytes`: half a `Deliver` batch, so one envelope and its record
    /// always fit in a batch the delivery task is willing to send.
    pub const MAX_ENVELOPE_BYTES_CEILING: usize = MAX_BATCH_BYTES / 2;

    /// Every limit but `max_attachments` is at least 1 (0 would refuse every envelope), and an
    /// envelope fits in a batch.
    pub fn check(&self) -> Result<(), String> {
        for (key, value) in [
            ("max_envelope_bytes", self.max_envelope_bytes),
            ("max_batch_envelopes", self.max_batch_envelopes),
            ("max_subject_chars", self.max_subject_chars),
            ("max_case_reference_chars", self.max_case_reference_chars),
            ("max_body_chars", self.max_body_chars),
            ("max_text_chars", self.max_text_chars),
            ("max_name_chars", self.max_name_chars),
            ("max_connections_per_listener", self.max_connections_per_listener),
            ("max_handshakes_per_listener", self.max_handshakes_per_listener),
            ("max_peer_connections_per_address", self.max_peer_connections_per_address),
            ("max_streams_per_connection", self.max_streams_per_connection as usize),
            ("desk_calls_per_second", self.desk_calls_per_second as usize),
            ("desk_call_burst", self.desk_call_burst as usize),
            ("max_filter_values", self.max_filter_values),
            ("max_streams_per_client", self.max_streams_per_client),
        ] {
            if value == 0 {
                return Err(format!("limits.{key}: must be at least 1"));
            }
        }
        if self.max_lifetime.is_zero() {
            return Err("limits.max_lifetime: must be more than 0".into());
        }
        if self.max_envelope_bytes > Self::MAX_ENVELOPE_BYTES_CEILING {
            return Err(format!(
                "limits.max_envelope_bytes: at most {} (half of a Deliver batch)",
                Self::MAX_ENVELOPE_BYTES_CEILING
            ));
        }
        self.check_resource_bounds()
    }

    /// The resource bounds: times long enough to be usable, and the caps consistent.
    fn check_resource_bounds(&self) -> Result<(), String> {
        for (key, value, least) in [
            ("handshake_timeout", self.handshake_timeout, std::time::Duration::from_millis(100)),
            ("request_timeout", self.request_timeout, std::time::Duration::from_millis(100)),
            (
                "audit_aggregation_interval",
                self.audit_aggregation_interval,
                std::time::Duration::from_millis(100),
            ),
            ("refusal_log_interval", self.refusal_log_interval, std::time::Duration::from_millis(100)),
        ] {
            if value < least {
                return Err(format!("limits.{key}: at least {}", humantime::format_duration(least)));
            }
        }
        if self.max_handshakes_per_listener > self.max_connections_per_listener {
            return Err(format!(
                "limits.max_handshakes_per_listener: {} is more than limits.max_connections_per_listener ({}); a handshake is a connection",
                self.max_handshakes_per_listener, self.max_connections_per_listener
            ));
        }
        if self.max_peer_connections_per_address > self.max_connections_per_listener {
            return Err(format!(
                "limits.max_peer_connections_per_address: {} is more than limits.max_connections_per_listener ({})",
                self.max_peer_connections_per_address, self.max_connections_per_listener
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_types::Timestamp;

    fn preservation() -> PreservationRequest {
        PreservationRequest {
            requesting_authority: "A05".into(),
            offence: "fraud".into(),
            facts: "phishing".into(),
            data_to_preserve: "mailbox".into(),
            link_to_offence: "used by suspect".into(),
            custodian_or_location: "provider X".into(),
            necessity: "deletion in 30 days".into(),
            mutual_legal_assistance_to_follow: true,
            preservation_days: 90,
        }
    }

    fn valid() -> Envelope {
        Envelope {
            id: Uuid::now_v7().to_string(),
            origin: "VN".into(),
            destination: "FR".into(),
            kind: EnvelopeKind::Request as i32,
            request_type: RequestType::Preservation as i32,
            precedence: Precedence::Flash as i32,
            case_reference: "VN-2026-1".into(),
            subject: "Preserve mailbox".into(),
            language: "en".into(),
            created_at: Some(Timestamp::default()),
            expires_at: Some(Timestamp::default()),
            handling_code: HandlingCode::H0 as i32,
            preservation: Some(preservation()),
            ..Default::default()
        }
    }

    fn field_of(change: impl FnOnce(&mut Envelope)) -> String {
        let mut envelope = valid();
        change(&mut envelope);
        check_envelope(&envelope, &Limits::default()).unwrap_err().field
    }

    #[test]
    fn valid_envelope_passes() {
        check_envelope(&valid(), &Limits::default()).unwrap();
    }

    #[test]
    fn each_refusal_names_its_field() {
        assert_eq!(field_of(|e| e.id = "x".into()), "id");
        assert_eq!(field_of(|e| e.destination = "FRA".into()), "destination");
        assert_eq!(field_of(|e| e.subject = "  ".into()), "subject");
        assert_eq!(field_of(|e| e.subject = "x".repeat(201)), "subject");
        assert_eq!(field_of(|e| e.language = "english language".into()), "language");
        assert_eq!(field_of(|e| e.precedence = 0), "precedence");
        assert_eq!(field_of(|e| e.preservation = None), "preservation");
        assert_eq!(field_of(|e| e.preservation.as_mut().unwrap().offence.clear()), "preservation.offence");
        assert_eq!(
            field_of(|e| e.preservation.as_mut().unwrap().preservation_days = 59),
            "preservation.preservation_days"
        );
        assert_eq!(
            field_of(|e| e.preservation.as_mut().unwrap().mutual_legal_assistance_to_follow = false),
            "preservation.mutual_legal_assistance_to_follow"
        );
        assert_eq!(field_of(|e| e.handling_code = HandlingCode::H3 as i32), "handling_restrictions");
        assert_eq!(
            field_of(|e| e.attachments.push(crate::proto::Attachment {
                name: "a".into(),
                media_type: "text/csv".into(),
                size_bytes: 1,
                sha256: vec![0; 31]
            })),
            "attachments[0].sha256"
        );
        assert_eq!(
            field_of(|e| {
                e.kind = EnvelopeKind::Acknowledgement as i32;
                e.preservation = None;
            }),
            "in_reply_to"
        );
    }

    #[test]
    fn limits_are_over_limit_refusals_naming_the_limit() {
        let mut envelope = valid();
        envelope.body = "x".repeat(MAX_ENVELOPE_BYTES);
        let error = check_envelope(&envelope, &Limits::default()).unwrap_err();
        assert_eq!(error.field, "envelope");
        assert!(error.over_limit && error.message.contains("at most 1048576"), "{error}");
        let mut envelope = valid();
        let attachment = crate::proto::Attachment {
            name: "a".into(),
            media_type: "text/plain".into(),
            size_bytes: 1,
            sha256: vec![0; 32],
        };
        envelope.attachments = vec![attachment; MAX_ATTACHMENTS + 1];
        let error = check_envelope(&envelope, &Limits::default()).unwrap_err();
        assert_eq!((error.field.as_str(), error.over_limit), ("attachments", true));
    }

    #[test]
    fn configured_length_limits_name_field_and_key() {
        let limits = Limits {
            max_subject_chars: 5,
            max_case_reference_chars: 4,
            max_body_chars: 6,
            max_text_chars: 20,
            max_name_chars: 8,
            ..Limits::default()
        };
        // Counted in characters, not bytes: five non-ASCII characters fit in five.
        let within = || {
            let mut envelope = valid();
            envelope.subject = "Bảo vệ".chars().take(5).collect();
            envelope.case_reference = "VN-1".into();
            envelope.body = "thư ".into();
            envelope
        };
        check_envelope(&within(), &limits).unwrap_or_else(|e| panic!("{e}"));
        let refusal = |change: &dyn Fn(&mut Envelope)| {
            let mut envelope = within();
            change(&mut envelope);
            let error = check_envelope(&envelope, &limits).unwrap_err();
            assert!(error.over_limit, "{error}");
            (error.field, error.message)
        };
        let (field, message) = refusal(&|e| e.subject = "Bảo vệ".into());
        assert_eq!(field, "subject");
        assert!(message.contains("6 characters, at most 5 (limits.max_subject_chars)"), "{message}");
        assert_eq!(refusal(&|e| e.case_reference = "VN-12".into()).0, "case_reference");
        assert_eq!(refusal(&|e| e.body = "1234567".into()).0, "body");
        assert_eq!(
            refusal(&|e| e.preservation.as_mut().unwrap().facts = "x".repeat(21)).0,
            "preservation.facts"
        );
        assert_eq!(refusal(&|e| e.handling_restrictions = "x".repeat(21)).0, "handling_restrictions");
        let mut envelope = within();
        envelope.destination = "F".repeat(65);
        let error = check_envelope(&envelope, &limits).unwrap_err();
        assert_eq!(error.field, "destination");
        assert!(!error.message.contains("FFF"), "{error}");
        let (field, message) = refusal(&|e| {
            e.attachments.push(crate::proto::Attachment {
                name: "123456789".into(),
                media_type: "text/csv".into(),
                size_bytes: 1,
                sha256: vec![0; 32],
            })
        });
        assert_eq!(field, "attachments[0].name");
        assert!(message.contains("(limits.max_name_chars)"), "{message}");
        let error = check_batch(3, &Limits { max_batch_envelopes: 2, ..limits.clone() }).unwrap_err();
        assert_eq!((error.field.as_str(), error.over_limit), ("envelopes", true));
        assert!(error.message.contains("limits.max_batch_envelopes"), "{error}");
        check_batch(2, &Limits { max_batch_envelopes: 2, ..limits.clone() }).unwrap();
        assert_eq!(check_reply_text("text", "1234567", &limits).unwrap_err().field, "text");
        check_reply_text("text", "123456", &limits).unwrap();
    }

    #[test]
    fn controls_and_bidi_overrides_are_refused_naming_the_field() {
        assert_eq!(field_of(|e| e.subject = "Urgent \u{1b}]0;pwned\u{7}".into()), "subject");
        assert_eq!(field_of(|e| e.subject = "a\tb".into()), "subject");
        assert_eq!(field_of(|e| e.case_reference = "VN-\u{202E}1".into()), "case_reference");
        assert_eq!(field_of(|e| e.body = "a\u{85}b".into()), "body");
        assert_eq!(
            field_of(|e| e.preservation.as_mut().unwrap().facts = "\u{2066}x".into()),
            "preservation.facts"
        );
        let mut envelope = valid();
        envelope.body = "line one\r\n\tline two\n".into();
        envelope.subject = "שלום \u{200F}(RLM)".into();
        check_envelope(&envelope, &Limits::default()).unwrap();
        let error = check_reply_text("note", "ok\u{1b}[2J", &Limits::default()).unwrap_err();
        assert_eq!(error.field, "note");
        assert!(error.message.contains("U+001B"), "{error}");
    }

    #[test]
    fn times_are_checked_against_now_skew_and_lifetime() {
        let limits = Limits::default();
        let now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        let at = |seconds: i64, nanos: i32| Some(Timestamp { seconds, nanos });
        let field = |created: Option<Timestamp>, expires: Option<Timestamp>| {
            let mut envelope = valid();
            envelope.created_at = created;
            envelope.expires_at = expires;
            check_times(&envelope, now, &limits).err().map(|e| e.field)
        };
        let day = 86_400;
        assert_eq!(field(at(1_800_000_000, 0), at(1_800_000_000 + 7 * day, 0)), None);
        // Long queued: created a year ago, still fine.
        assert_eq!(field(at(1_800_000_000 - 360 * day, 0), at(1_800_000_000 + day, 0)), None);
        assert_eq!(
            field(at(1_800_000_000 + 3600, 0), at(1_800_000_000 + day, 0)).as_deref(),
            Some("created_at")
        );
        assert_eq!(
            field(at(1_800_000_000, 2_000_000_000), at(1_800_000_000 + day, 0)).as_deref(),
            Some("created_at")
        );
        assert_eq!(field(at(1_800_000_000, 0), at(1_800_000_000 + day, -1)).as_deref(), Some("expires_at"));
        assert_eq!(field(at(1_800_000_000, 0), at(253_402_300_800, 0)).as_deref(), Some("expires_at"));
        assert_eq!(
            field(at(1_800_000_000, 0), at(1_800_000_000 + 400 * day, 0)).as_deref(),
            Some("expires_at")
        );
        assert_eq!(field(at(1_800_000_000, 0), at(1_800_000_000, 0)).as_deref(), Some("expires_at"));
        assert_eq!(field(at(i64::MIN, i32::MIN), at(i64::MAX, i32::MAX)).as_deref(), Some("created_at"));
    }

    #[test]
    fn a_continuation_needs_no_preservation_fields() {
        let mut envelope = valid();
        envelope.preservation = None;
        envelope.in_reply_to = Uuid::now_v7().to_string();
        check_envelope(&envelope, &Limits::default()).unwrap();
    }
}
