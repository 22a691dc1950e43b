//! How the CLI shows messages: a human view (tables, timelines) and a JSON view for scripts.

use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::domain::lifecycle::state_name;
use crate::domain::names::ShortName;
use crate::domain::timestamp::{age, rfc3339};
use crate::proto::Message;

pub use crate::domain::json::event_json;
use crate::domain::json::time;
use crate::trust::proof::readable_envelope as envelope_json;

/// Foreign text for one line of a table: controls and bidi overrides escaped (`domain::text`).
fn line(text: &str) -> std::borrow::Cow<'_, str> {
    crate::domain::text::printable(text, false)
}

/// Foreign multi-line text (a body): tabs and newlines kept, other controls escaped.
fn block(text: &str) -> std::borrow::Cow<'_, str> {
    crate::domain::text::printable(text, true)
}

/// A message (envelope and lifecycle) as JSON.
pub fn message_json(m: &Message) -> Value {
    json!({
        "envelope": m.envelope.as_ref().map(envelope_json),
        "direction": m.direction().short_name(),
        "state": state_name(m.state()),
        "timeline": m.timeline.iter().map(|t| json!({
            "at": time(t.at.as_ref()),
            "state": state_name(t.state()),
            "note": t.note,
        })).collect::<Vec<_>>(),
        "last_error": m.last_error,
        "attempts": m.attempts,
        "next_attempt_at": time(m.next_attempt_at.as_ref()),
        "received_at": time(m.received_at.as_ref()),
        "ack_deadline": time(m.ack_deadline.as_ref()),
        "overdue": m.overdue,
        "closed": m.closed_at.is_some(),
        "closed_at": time(m.closed_at.as_ref()),
        "closed_by": m.closed_by,
        "close_reason": m.close_reason,
        "content_removed_at": time(m.content_removed_at.as_ref()),
        "content_removed": m.content_removed,
        "envelope_sha256": hex::encode(&m.envelope_sha256),
        "outcome": crate::domain::json::outcome_json(m.outcome.as_ref()),
        "preserved_until": time(m.preserved_until.as_ref()),
        "mla_reference": m.mla_reference,
        "mla_sent_at": time(m.mla_sent_at.as_ref()),
    })
}

/// The state column: the state, with CLOSED after it for a closed case.
fn state_column(m: &Message) -> String {
    match m.closed_at {
        Some(_) => format!("{} CLOSED", state_name(m.state())),
        None => state_name(m.state()).to_owned(),
    }
}

/// The subject as lists show it: "(content removed)" once retention removed it.
fn subject_of(m: &Message, e: &crate::proto::Envelope) -> String {
    if m.content_removed_at.is_some() {
        "(content removed)".to_owned()
    } else {
        line(&e.subject).into_owned()
    }
}

/// One line per message: id, peer, precedence, state, age, subject.
pub fn message_table(messages: &[Message]) -> String {
    let mut out = format!(
        "{:<36}  {:<4} {:<9} {:<20} {:<7} {:>8}  {:<25} SUBJECT\n",
        "ID", "PEER", "PREC", "STATE", "OVERDUE", "AGE", "OUTCOME"
    );
    for m in messages {
        let e = m.envelope.clone().unwrap_or_default();
        let peer = if m.direction() == crate::proto::Direction::Inbound { &e.origin } else { &e.destination };
        let created = m.timeline.first().and_then(|t| t.at);
        let _ = writeln!(
            out,
            "{:<36}  {:<4} {:<9} {:<20} {:<7} {:>8}  {:<25} {}",
            line(&e.id),
            line(peer),
            e.precedence().short_name(),
            state_column(m),
            if m.overdue { "OVERDUE" } else { "" },
            created.as_ref().map(age).unwrap_or_default(),
            m.outcome.as_ref().map(|o| o.kind().short_name()).unwrap_or(""),
            if e.exercise { format!("[EXERCISE] {}", subject_of(m, &e)) } else { subject_of(m, &e) }
        );
    }
    out
}

/// A message with its fields, timeline and replies, for `show`.
pub fn message_details(m: &Message, replies: &[Message]) -> String {
    let e = m.envelope.clone().unwrap_or_default();
    let mut out = String::new();
    let _ = writeln!(out, "{}  {}", line(&e.id), state_column(m));
    if e.exercise {
        let _ = writeln!(out, "EXERCISE: a drill, not a real request");
    }
    if let Some(at) = &m.closed_at {
        let reason =
            if m.close_reason.is_empty() { String::new() } else { format!(": {}", line(&m.close_reason)) };
        let _ = writeln!(out, "CLOSED at {} by {}{reason}", rfc3339(at), line(&m.closed_by));
    }
    if let Some(at) = &m.content_removed_at {
        let _ = writeln!(
            out,
            "CONTENT REMOVED at {} (retention of closed cases): {}; the envelope as signed had SHA-256 {}",
            rfc3339(at),
            m.content_removed.join(", "),
            hex::encode(&m.envelope_sha256)
        );
    }
    let rows = [
        ("kind", e.kind().short_name().to_owned()),
        ("from → to", format!("{} → {}", e.origin, e.destination)),
        ("type", e.request_type().short_name().to_owned()),
        ("precedence", e.precedence().short_name().to_owned()),
        ("case", e.case_reference.clone()),
        ("subject", e.subject.clone()),
        ("language", e.language.clone()),
        ("handling", e.handling_code().short_name().to_owned()),
        ("created", e.created_at.as_ref().map(rfc3339).unwrap_or_default()),
        ("expires", e.expires_at.as_ref().map(rfc3339).unwrap_or_default()),
        ("in reply to", e.in_reply_to.clone()),
        ("ack by", m.ack_deadline.as_ref().map(rfc3339).unwrap_or_default()),
        ("overdue", if m.overdue { "YES: not acknowledged by its deadline".into() } else { String::new() }),
        ("last error", m.last_error.clone()),
        ("outcome", m.outcome.as_ref().map(|o| o.kind().short_name().to_owned()).unwrap_or_default()),
        ("preserved to", m.preserved_until.as_ref().map(rfc3339).unwrap_or_default()),
        ("MLA sent", m.mla_reference.clone()),
    ];
    for (label, value) in rows.iter().filter(|(_, v)| !v.is_empty()) {
        let _ = writeln!(out, "  {label:<12} {}", line(value));
    }
    if !e.body.is_empty() {
        let _ = writeln!(out, "  body\n    {}", block(&e.body).replace('\n', "\n    "));
    }
    if let Some(o) = m.outcome.as_ref().or(e.outcome.as_ref()) {
        outcome_details(&mut out, o);
    }
    if let Some(p) = &e.preservation {
        let _ = writeln!(out, "  preservation");
        for (label, value) in [
            ("requesting authority", p.requesting_authority.as_str()),
            ("offence", &p.offence),
            ("facts", &p.facts),
            ("data to preserve", &p.data_to_preserve),
            ("link to offence", &p.link_to_offence),
            ("custodian/location", &p.custodian_or_location),
            ("necessity", &p.necessity),
        ] {
            let _ = writeln!(
                out,
                "    {label:<21} {}",
                block(value).replace('\n', "\n                          ")
            );
        }
        let _ = writeln!(
            out,
            "    {:<21} {}",
            "MLA request to follow",
            if p.mutual_legal_assistance_to_follow { "yes" } else { "no" }
        );
        let _ = writeln!(out, "    {:<21} {} days", "period", p.preservation_days);
    }
    if !e.attachments.is_empty() {
        let _ = writeln!(out, "  attachments");
        for a in &e.attachments {
            let _ = writeln!(
                out,
                "    {}  {}  {} bytes  sha256 {}",
                line(&a.name),
                line(&a.media_type),
                a.size_bytes,
                hex::encode(&a.sha256)
            );
        }
    }
    let _ = writeln!(out, "  timeline");
    for t in &m.timeline {
        let _ = writeln!(
            out,
            "    {}  {:<13} {}",
            t.at.as_ref().map(rfc3339).unwrap_or_default(),
            state_name(t.state()),
            line(&t.note)
        );
    }
    if !replies.is_empty() {
        let _ = writeln!(out, "  replies");
        for r in replies {
            let re = r.envelope.clone().unwrap_or_default();
            let _ = writeln!(
                out,
                "    {}  {:<16} {} → {}  {:<10} {}",
                re.created_at.as_ref().map(rfc3339).unwrap_or_default(),
                re.kind().short_name(),
                line(&re.origin),
                line(&re.destination),
                state_column(r),
                if r.content_removed_at.is_some() {
                    "(content removed)".into()
                } else {
                    line(if re.body.is_empty() { &re.subject } else { &re.body })
                }
            );
        }
    }
    out
}

/// A typed outcome's fields under `show`'s "outcome" heading (only those set).
fn outcome_details(out: &mut String, o: &crate::proto::Outcome) {
    let _ = writeln!(out, "  outcome      {}", o.kind().short_name());
    let traffic = o.traffic_data.clone().unwrap_or_default();
    for (label, value) in [
        ("reference", o.reference.clone()),
        ("grounds", o.refusal_grounds.clone()),
        ("preserved until", o.preserved_until.as_ref().map(rfc3339).unwrap_or_default()),
        ("forwarded to", o.forwarded_to.clone()),
        ("provider/path", traffic.provider_or_path),
        ("third State", traffic.third_state),
        ("preservation", traffic.preservation_id),
    ] {
        if !value.is_empty() {
            let _ = writeln!(
                out,
                "    {label:<21} {}",
                block(&value).replace('\n', "\n                          ")
            );
        }
    }
}

/// One peer's queue as JSON.
pub fn queue_json(q: &crate::proto::PeerQueue) -> Value {
    json!({
        "peer": q.peer,
        "queued": { "FLASH": q.flash, "IMMEDIATE": q.immediate, "PRIORITY": q.priority, "ROUTINE": q.routine },
        "oldest_created_at": time(q.oldest_created_at.as_ref()),
        "next_attempt_at": time(q.next_attempt_at.as_ref()),
        "failures": q.failures,
        "last_error": q.last_error,
        "last_error_at": time(q.last_error_at.as_ref()),
        "last_success_at": time(q.last_success_at.as_ref()),
        "last_error_is_past": past(q.last_error_at.as_ref(), q.last_success_at.as_ref()),
        "connection": q.connection().short_name(),
    })
}

/// The queue view as a table.
pub fn queue_table(peers: &[crate::proto::PeerQueue]) -> String {
    let mut out = format!(
        "{:<4} {:>5} {:>5} {:>5} {:>5} {:>8} {:>10} {:>8} {:<10} {}\n",
        "PEER",
        "FLASH",
        "IMMED",
        "PRIOR",
        "ROUT",
        "OLDEST",
        "NEXT TRY",
        "FAILURES",
        "CONNECTION",
        "LAST ERROR"
    );
    for q in peers {
        let next = q.next_attempt_at.as_ref().map(until).unwrap_or_else(|| "-".into());
        let _ = writeln!(
            out,
            "{:<4} {:>5} {:>5} {:>5} {:>5} {:>8} {:>10} {:>8} {:<10} {}",
            q.peer,
            q.flash,
            q.immediate,
            q.priority,
            q.routine,
            q.oldest_created_at.as_ref().map(age).unwrap_or_else(|| "-".into()),
            next,
            q.failures,
            q.connection().short_name(),
            line(&error_note(&q.last_error, q.last_error_at.as_ref(), q.last_success_at.as_ref()))
        );
    }
    out
}

/// Whether an error at `error_at` came before the last success.
fn past(error_at: Option<&prost_types::Timestamp>, success_at: Option<&prost_types::Timestamp>) -> bool {
    crate::runtime::peer_board::error_is_past(
        error_at.map(crate::domain::timestamp::to_system),
        success_at.map(crate::domain::timestamp::to_system),
    )
}

/// The last error, marked as past when a later call succeeded.
pub fn error_note(
    error: &str,
    error_at: Option<&prost_types::Timestamp>,
    success_at: Option<&prost_types::Timestamp>,
) -> String {
    crate::runtime::peer_board::last_error_note(
        error,
        error_at.map(crate::domain::timestamp::to_system),
        success_at.map(crate::domain::timestamp::to_system),
    )
}

/// "in 3s" for a future time, "now" for a past one.
fn until(at: &prost_types::Timestamp) -> String {
    let at = crate::domain::timestamp::to_system(at);
    match at.duration_since(std::time::SystemTime::now()) {
        Ok(left) => format!(
            "in {}",
            humantime::format_duration(std::time::Duration::from_secs(left.as_secs().max(1)))
        ),
        Err(_) => "now".into(),
    }
}

/// The peers view as JSON.
pub fn peers_json(p: &crate::proto::ListPeersResponse) -> Value {
    json!({
        "peers": p.peers.iter().map(|i| json!({
            "peer": i.peer,
            "name": i.name,
            "endpoint": i.endpoint,
            "connection": i.connection().short_name(),
            "last_contact_at": time(i.last_contact_at.as_ref()),
            "round_trip_ms": i.round_trip_ms,
            "software_version": i.software_version,
            "certificate_expires_at": time(i.certificate_expires_at.as_ref()),
            "last_error": i.last_error,
            "last_error_at": time(i.last_error_at.as_ref()),
            "last_error_is_past": past(i.last_error_at.as_ref(), i.last_contact_at.as_ref()),
            "directory_version": i.directory_version,
            "languages": i.languages,
            "time_zone": i.time_zone,
            "phone": i.phone,
            "local_time": if i.local_time.is_empty() { Value::Null } else { json!(i.local_time) },
        })).collect::<Vec<_>>(),
        "directory_version": p.directory_version,
        "own_certificate_expires_at": time(p.own_certificate_expires_at.as_ref()),
        "network_ca_expires_at": time(p.network_ca_expires_at.as_ref()),
        "local_ca_expires_at": time(p.local_ca_expires_at.as_ref()),
        "warnings": p.warnings,
    })
}

/// The peers view as a table, warnings first.
pub fn peers_table(p: &crate::proto::ListPeersResponse) -> String {
    let mut out = String::new();
    for warning in &p.warnings {
        let _ = writeln!(out, "WARNING: {}", line(warning));
    }
    let _ = writeln!(
        out,
        "{:<4} {:<10} {:>12} {:>8} {:<16} {:<10} {:<9} {:<21} NAME",
        "PEER", "CONNECTION", "LAST CONTACT", "RTT", "VERSION", "CERT DAYS", "DIRECTORY", "ENDPOINT"
    );
    for i in &p.peers {
        let days = i.certificate_expires_at.as_ref().map_or("-".into(), |at| {
            let left = crate::domain::timestamp::to_system(at).duration_since(std::time::SystemTime::now());
            left.map_or("expired".into(), |d| (d.as_secs() / 86_400).to_string())
        });
        let _ = writeln!(
            out,
            "{:<4} {:<10} {:>12} {:>8} {:<16} {:<10} {:<9} {:<21} {}",
            i.peer,
            i.connection().short_name(),
            i.last_contact_at.as_ref().map(|t| format!("{} ago", age(t))).unwrap_or_else(|| "never".into()),
            if i.round_trip_ms > 0.0 { format!("{:.1}ms", i.round_trip_ms) } else { "-".into() },
            if i.software_version.is_empty() { "-".into() } else { line(&i.software_version) },
            days,
            directory_version_cell(i.directory_version, p.directory_version),
            line(&i.endpoint),
            line(&i.name)
        );
        let error = error_note(&i.last_error, i.last_error_at.as_ref(), i.last_contact_at.as_ref());
        if !error.is_empty() {
            let _ = writeln!(out, "     {}", line(&error));
        }
        let call = who_to_call(i);
        if !call.is_empty() {
            let _ = writeln!(out, "     {}", line(&call));
        }
    }
    let own = p.own_certificate_expires_at.as_ref().map(rfc3339).unwrap_or_default();
    let _ = writeln!(out, "this node's certificate expires {own}");
    let _ = writeln!(out, "this node's directory is version {}", p.directory_version);
    out
}

/// "call +33 1 00 00 00 00 · Sat 08:45 UTC+01:00 (Europe/Paris) · fr, en": a peer's contact
/// details as one line, what the directory lists of them; empty when it lists nothing.
fn who_to_call(peer: &crate::proto::PeerInfo) -> String {
    let mut parts = Vec::new();
    if !peer.phone.is_empty() {
        parts.push(format!("call {}", peer.phone));
    }
    let local = crate::domain::local_time::describe(&peer.local_time, &peer.time_zone);
    if !local.is_empty() {
        parts.push(local);
    }
    if !peer.languages.is_empty() {
        parts.push(format!("languages {}", peer.languages.join(", ")));
    }
    parts.join(" · ")
}

/// A peer's directory version, marked when it is behind this node's ("3 (old)"), "-" if unknown.
fn directory_version_cell(theirs: u64, ours: u64) -> String {
    match theirs {
        0 => "-".into(),
        v if v < ours => format!("{v} (old)"),
        v => v.to_string(),
    }
}

/// A verified directory as a table: version, issue time, one line per member.
pub fn directory_table(directory: &crate::trust::directory::Directory) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "directory of network {}: version {}, issued at {}, signature good",
        directory.network, directory.version, directory.issued_at
    );
    let _ = writeln!(
        out,
        "{:<4} {:<24} {:<10} {:<16} {:<18} {:<16} {:<16} NAME",
        "CODE", "ENDPOINT", "LANGUAGES", "TIME ZONE", "PHONE", "REQUEST TYPES", "CERT SHA-256"
    );
    for m in &directory.members {
        let types = if m.request_types.is_empty() { "all".to_owned() } else { m.request_types.join(",") };
        let pin = if m.certificate_sha256.is_empty() {
            "-"
        } else {
            &m.certificate_sha256[..16.min(m.certificate_sha256.len())]
        };
        let _ = writeln!(
            out,
            "{:<4} {:<24} {:<10} {:<16} {:<18} {:<16} {:<16} {}",
            m.code,
            line(&m.endpoint),
            line(&m.languages.join(",")),
            line(&m.time_zone),
            line(&m.phone),
            line(&types),
            pin,
            line(&m.name)
        );
        if !m.next_certificate_sha256.is_empty() {
            // A rotation under way: the next certificate is accepted too.
            let next = &m.next_certificate_sha256[..16.min(m.next_certificate_sha256.len())];
            let _ = writeln!(out, "{:<4} next certificate SHA-256 {next} (rotation under way)", "");
        }
    }
    out
}

/// An audit record as JSON (hashes in hex).
pub fn audit_json(r: &crate::proto::ListAuditResponse) -> Value {
    let mut value = json!({
        "sequence": r.sequence,
        "at": time(r.at.as_ref()),
        "who": r.who,
        "action": r.action,
        "message_id": r.message_id,
        "details": r.details,
        "prev_hash": hex::encode(&r.prev_hash),
        "hash": hex::encode(&r.hash),
    });
    if !r.damaged.is_empty() {
        value["damaged"] = Value::String(r.damaged.clone());
    }
    value
}

/// One line per audit record: sequence, time, who, action, message, details, start of the hash.
pub fn audit_table(records: &[crate::proto::ListAuditResponse]) -> String {
    let mut out = format!(
        "{:>6}  {:<24}  {:<24} {:<13} {:<36}  {:<12}  DETAILS\n",
        "SEQ", "TIME", "WHO", "ACTION", "MESSAGE", "HASH"
    );
    for r in records {
        if !r.damaged.is_empty() {
            let _ = writeln!(out, "{:>6}  DAMAGED: {}", r.sequence, line(&r.damaged));
            continue;
        }
        let hash = hex::encode(&r.hash);
        let _ = writeln!(
            out,
            "{:>6}  {:<24}  {:<24} {:<13} {:<36}  {:<12}  {}",
            r.sequence,
            r.at.as_ref().map(rfc3339).unwrap_or_default(),
            line(&r.who),
            line(&r.action),
            line(&r.message_id),
            hash.get(..12).unwrap_or_default(),
            line(&r.details)
        );
    }
    out
}

/// A refusal as the CLI shows it, from its status details (`ErrorInfo`, `BadRequest`):
/// "<REASON>: <field>: <what is wrong>" (the code is said beside it); `None` without them.
pub fn refusal_from_details(status: &tonic::Status) -> Option<String> {
    use tonic_types::StatusExt as _;
    let info = status.get_details_error_info()?;
    let fields = status.get_details_bad_request().map(|bad| bad.field_violations).unwrap_or_default();
    let what = if fields.is_empty() {
        line(status.message()).into_owned()
    } else {
        fields
            .iter()
            .map(|v| format!("{}: {}", line(&v.field), line(&v.description)))
            .collect::<Vec<_>>()
            .join("; ")
    };
    Some(format!("{}: {what}", line(&info.reason)))
}

/// A refusal's status details as JSON: `{"reason", "domain", "metadata", "field_violations":
/// [{"field", "description"}]}`; `None` for a status without them.
pub fn refusal_details_json(status: &tonic::Status) -> Option<Value> {
    use tonic_types::StatusExt as _;
    let info = status.get_details_error_info()?;
    let fields = status.get_details_bad_request().map(|bad| bad.field_violations).unwrap_or_default();
    Some(json!({
        "reason": info.reason,
        "domain": info.domain,
        "metadata": info.metadata,
        "field_violations": fields
            .iter()
            .map(|v| json!({ "field": v.field, "description": v.description }))
            .collect::<Vec<_>>(),
    }))
}

/// A statistics row's and time's words: direction, and the proto enums' short names.
fn statistics_words(row: &crate::proto::StatisticsRow) -> [String; 6] {
    use crate::desk::statistics::direction_word;
    [
        direction_word(row.direction()).to_owned(),
        row.request_type().short_name().to_owned(),
        row.precedence().short_name().to_owned(),
        line(&row.peer).into_owned(),
        state_name(row.state()).to_owned(),
        match row.outcome() {
            crate::proto::OutcomeKind::Unspecified => String::new(),
            kind => kind.short_name().to_owned(),
        },
    ]
}

/// The statistics as JSON: the period, the rows and the times (seconds).
pub fn statistics_json(figures: &crate::proto::GetStatisticsResponse) -> Value {
    use crate::desk::statistics::direction_word;
    json!({
        "from": time(figures.from.as_ref()),
        "to": time(figures.to.as_ref()),
        "exercises_excluded": figures.exercises_excluded,
        "rows": figures.rows.iter().map(|row| {
            let [direction, request_type, precedence, peer, state, outcome] = statistics_words(row);
            json!({
                "direction": direction,
                "request_type": request_type,
                "precedence": precedence,
                "peer": peer,
                "state": state,
                "outcome": outcome,
                "count": row.count,
            })
        }).collect::<Vec<_>>(),
        "times": figures.times.iter().map(|t| json!({
            "direction": direction_word(t.direction()),
            "measure": t.measure().as_str_name().trim_start_matches("TIME_MEASURE_").to_ascii_lowercase(),
            "count": t.count,
            "p50_seconds": t.p50_seconds,
            "p90_seconds": t.p90_seconds,
        })).collect::<Vec<_>>(),
    })
}

/// The statistics as one CSV table: `record` is `count` (a row) or `time` (a measure).
pub fn statistics_csv(figures: &crate::proto::GetStatisticsResponse) -> String {
    use crate::desk::statistics::direction_word;
    let mut out = String::from(
        "record,direction,request_type,precedence,peer,state,outcome,measure,count,p50_seconds,p90_seconds\n",
    );
    for row in &figures.rows {
        let [direction, request_type, precedence, peer, state, outcome] = statistics_words(row);
        let _ = writeln!(
            out,
            "count,{direction},{request_type},{precedence},{peer},{state},{outcome},,{},,",
            row.count
        );
    }
    for t in &figures.times {
        let measure = t.measure().as_str_name().trim_start_matches("TIME_MEASURE_").to_ascii_lowercase();
        let _ = writeln!(
            out,
            "time,{},,,,,,{measure},{},{:.3},{:.3}",
            direction_word(t.direction()),
            t.count,
            t.p50_seconds,
            t.p90_seconds
        );
    }
    out
}

/// The statistics as two tables: counts, then times.
pub fn statistics_table(figures: &crate::proto::GetStatisticsResponse) -> String {
    use crate::desk::statistics::{direction_word, measure_words};
    let mut out = String::new();
    let from = figures.from.as_ref().map_or_else(|| "the first".to_owned(), rfc3339);
    let to = figures.to.as_ref().map(rfc3339).unwrap_or_default();
    let _ = writeln!(out, "requests created from {from} to {to}");
    let _ = writeln!(
        out,
        "{:<9} {:<24} {:<10} {:<4} {:<14} {:<25} {:>7}",
        "DIRECTION", "TYPE", "PRECEDENCE", "PEER", "STATE", "OUTCOME", "COUNT"
    );
    for row in &figures.rows {
        let [direction, request_type, precedence, peer, state, outcome] = statistics_words(row);
        let _ = writeln!(
            out,
            "{direction:<9} {request_type:<24} {precedence:<10} {peer:<4} {state:<14} {outcome:<25} {:>7}",
            row.count
        );
    }
    if figures.rows.is_empty() {
        let _ = writeln!(out, "(no requests in this period)");
    }
    if figures.exercises_excluded > 0 {
        let _ = writeln!(out, "({} exercise requests not counted)", figures.exercises_excluded);
    }
    let _ = writeln!(out, "\n{:<28} {:>7} {:>10} {:>10}", "TIME FROM CREATION", "COUNT", "MEDIAN", "P90");
    let seconds = crate::desk::statistics::seconds_words;
    for t in &figures.times {
        let what = format!("{} {}", direction_word(t.direction()), measure_words(t.measure()));
        let _ = writeln!(
            out,
            "{what:<28} {:>7} {:>10} {:>10}",
            t.count,
            seconds(t.p50_seconds),
            seconds(t.p90_seconds)
        );
    }
    out
}
