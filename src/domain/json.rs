//! JSON views of the desk API's values shared by the command line's `--json` output and the
//! console's live stream: enum values by their short names, times in RFC 3339 UTC.

use serde_json::{Value, json};

use crate::domain::lifecycle::state_name;
use crate::domain::names::ShortName as _;
use crate::domain::timestamp::rfc3339;
use crate::proto::{Outcome, WatchResponse};

/// A time as an RFC 3339 string, or `null`.
pub fn time(t: Option<&prost_types::Timestamp>) -> Value {
    t.map_or(Value::Null, |t| Value::String(rfc3339(t)))
}

/// An event as JSON.
pub fn event_json(e: &WatchResponse) -> Value {
    json!({
        "sequence": e.sequence,
        "at": time(e.at.as_ref()),
        "message_id": e.message_id,
        "state": state_name(e.state()),
        "peer": e.peer,
        "precedence": e.precedence().short_name(),
        "note": e.note,
        "overdue": e.overdue,
        "exercise": e.exercise,
        "outcome": e.outcome,
        "preservation_reminder": e.preservation_reminder,
    })
}

/// A typed outcome as JSON (the kind by its short name), or `null`.
pub fn outcome_json(o: Option<&Outcome>) -> Value {
    o.map_or(Value::Null, |o| {
        json!({
            "kind": o.kind().short_name(),
            "reference": o.reference,
            "refusal_grounds": o.refusal_grounds,
            "preserved_until": time(o.preserved_until.as_ref()),
            "forwarded_to": o.forwarded_to,
            "traffic_data": o.traffic_data.as_ref().map(|t| json!({
                "provider_or_path": t.provider_or_path,
                "third_state": t.third_state,
                "preservation_id": t.preservation_id,
            })),
        })
    })
}
