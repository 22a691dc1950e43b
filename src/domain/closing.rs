//! Retention that protects people: what "the content of a closed case" is, and removing it from
//! one message. Removal keeps everything that proves what happened (ids, kinds, peers, states,
//! times, the case reference, handling codes, digests, receipts, signatures); it clears what
//! tells about people (free text, the typed fields' words, attachment names). The envelope's
//! digest is computed by the caller before (signing is `trust`'s), because the envelope no longer
//! encodes to it afterwards.

use prost_types::Timestamp;

use crate::proto::Message;

/// Marks a timeline note's removed text: the summary before it (who did what) stays.
pub const REMOVED: &str = "(removed)";

/// Clears the content of `message` (its envelope, timeline notes and close reason), records
/// `at`, the fields removed and `envelope_sha256` (the digest as signed), and returns the fields'
/// names. A message whose content is already removed is left as it is (empty list).
pub fn remove_content(message: &mut Message, at: Timestamp, envelope_sha256: Vec<u8>) -> Vec<String> {
    if message.content_removed_at.is_some() {
        return Vec::new();
    }
    let mut removed: Vec<&str> = Vec::new();
    if let Some(envelope) = message.envelope.as_mut() {
        if !envelope.subject.is_empty() {
            envelope.subject.clear();
            removed.push("subject");
        }
        if !envelope.body.is_empty() {
            envelope.body.clear();
            removed.push("body");
        }
        if !envelope.handling_restrictions.is_empty() {
            envelope.handling_restrictions.clear();
            removed.push("handling_restrictions");
        }
        if let Some(p) = envelope.preservation.as_mut() {
            // The words go; the period and the promise of an MLA request are facts of the case.
            for text in [
                &mut p.requesting_authority,
                &mut p.offence,
                &mut p.facts,
                &mut p.data_to_preserve,
                &mut p.link_to_offence,
                &mut p.custodian_or_location,
                &mut p.necessity,
            ] {
                text.clear();
            }
            removed.push("preservation");
        }
        if let Some(outcome) = envelope.outcome.as_mut()
            && clear_outcome_words(outcome)
        {
            removed.push("outcome");
        }
        if !envelope.attachments.is_empty() {
            // Size, type and SHA-256 stay: they are what a kept copy is checked against.
            for attachment in &mut envelope.attachments {
                attachment.name.clear();
            }
            removed.push("attachments.name");
            // The files go with the unused uploads once no message lists them (the store drops
            // this message's references in the same write).
            removed.push(ATTACHMENT_CONTENT);
        }
    }
    let mut notes = false;
    for entry in &mut message.timeline {
        if let Some(kept) = note_without_text(&entry.note) {
            entry.note = kept;
            notes = true;
        }
    }
    if notes {
        removed.push("timeline.note");
    }
    // The request's copy of its latest outcome (`Message.outcome`) carries the same words.
    if let Some(outcome) = message.outcome.as_mut() {
        clear_outcome_words(outcome);
    }
    if !message.close_reason.is_empty() {
        message.close_reason.clear();
        removed.push("close_reason");
    }
    if !message.last_error.is_empty() && message.last_error.contains(": ") {
        // A peer's refusal can quote the request back; the summary before it stays.
        message.last_error = note_without_text(&message.last_error).unwrap_or_default();
        removed.push("last_error");
    }
    message.content_removed_at = Some(at);
    message.content_removed = removed.iter().map(|s| (*s).to_owned()).collect();
    message.envelope_sha256 = envelope_sha256;
    message.content_removed.clone()
}

/// The name under which removing attachment files is listed: the store drops the message's
/// references to them, and the files no other message lists go with the unused uploads.
pub const ATTACHMENT_CONTENT: &str = "attachments.content";

/// Clears an outcome's words (grounds, the authority forwarded to, the provider or path); its
/// kind, reference, dates and the third State's code stay. Whether there were any.
fn clear_outcome_words(outcome: &mut crate::proto::Outcome) -> bool {
    [&mut outcome.refusal_grounds, &mut outcome.forwarded_to]
        .into_iter()
        .chain(outcome.traffic_data.as_mut().map(|t| &mut t.provider_or_path))
        .fold(false, |any, text| {
            let had = !text.is_empty();
            text.clear();
            any || had
        })
}

/// A note that carries text ("summary: text", as the store writes officer and foreign text into
/// timelines) with the text replaced by [`REMOVED`]; `None` for a note without any.
fn note_without_text(note: &str) -> Option<String> {
    let (summary, text) = note.split_once(": ")?;
    (text != REMOVED).then(|| format!("{summary}: {REMOVED}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{
        Attachment, Envelope, Outcome, OutcomeKind, PreservationRequest, TimelineEntry, TrafficDataDisclosure,
    };

    #[test]
    fn content_goes_and_the_facts_of_the_case_stay() {
        let mut message = Message {
            envelope: Some(Envelope {
                id: "id".into(),
                origin: "VN".into(),
                case_reference: "VN-1".into(),
                subject: "Preserve mail of Jane Doe".into(),
                body: "jane@example.org".into(),
                handling_restrictions: "judge only".into(),
                preservation: Some(PreservationRequest {
                    facts: "facts".into(),
                    preservation_days: 90,
                    mutual_legal_assistance_to_follow: true,
                    ..Default::default()
                }),
                attachments: vec![Attachment {
                    name: "jane.csv".into(),
                    size_bytes: 3,
                    sha256: vec![1; 32],
                    ..Default::default()
                }],
                outcome: Some(Outcome {
                    kind: OutcomeKind::Refused as i32,
                    reference: "REF-9".into(),
                    refusal_grounds: "Jane is a minister".into(),
                    ..Default::default()
                }),
                origin_signature: vec![9],
                ..Default::default()
            }),
            outcome: Some(Outcome {
                kind: OutcomeKind::Executed as i32,
                traffic_data: Some(TrafficDataDisclosure {
                    provider_or_path: "mail.example.org".into(),
                    third_state: "DE".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            timeline: vec![
                TimelineEntry { note: "stored".into(), ..Default::default() },
                TimelineEntry { note: "cancelled by alice: Jane was found".into(), ..Default::default() },
            ],
            close_reason: "done".into(),
            ..Default::default()
        };
        let at = Timestamp { seconds: 5, nanos: 0 };
        let removed = remove_content(&mut message, at, vec![7; 32]);
        assert_eq!(
            removed,
            [
                "subject",
                "body",
                "handling_restrictions",
                "preservation",
                "outcome",
                "attachments.name",
                "attachments.content",
                "timeline.note",
                "close_reason"
            ]
        );
        let e = message.envelope.as_ref().unwrap();
        assert_eq!((e.subject.as_str(), e.body.as_str(), e.case_reference.as_str()), ("", "", "VN-1"));
        let p = e.preservation.as_ref().unwrap();
        assert_eq!(
            (p.facts.as_str(), p.preservation_days, p.mutual_legal_assistance_to_follow),
            ("", 90, true)
        );
        assert_eq!((e.attachments[0].name.as_str(), e.attachments[0].size_bytes), ("", 3));
        assert_eq!(e.origin_signature, [9]);
        let refused = e.outcome.as_ref().unwrap();
        assert_eq!((refused.refusal_grounds.as_str(), refused.reference.as_str()), ("", "REF-9"));
        let traffic = message.outcome.as_ref().unwrap().traffic_data.as_ref().unwrap();
        assert_eq!((traffic.provider_or_path.as_str(), traffic.third_state.as_str()), ("", "DE"));
        assert_eq!(message.timeline[0].note, "stored");
        assert_eq!(message.timeline[1].note, "cancelled by alice: (removed)");
        assert_eq!(message.content_removed_at, Some(at));
        assert_eq!(message.envelope_sha256, [7; 32]);

        let again = remove_content(&mut message, Timestamp { seconds: 9, nanos: 0 }, vec![1; 32]);
        assert!(again.is_empty(), "removed once");
        assert_eq!(message.content_removed_at, Some(at));
        assert_eq!(message.envelope_sha256, [7; 32]);
    }
}
