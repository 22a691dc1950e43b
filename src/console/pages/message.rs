//! One message: every field, its chain, its timeline and what this role may do with it.

use maud::{Markup, Render, html};

use super::{
    Frame, closed_badge, foreign, foreign_block, kind_or_type, layout, overdue_badge, precedence_badge,
    state_badge, time,
};
use crate::domain::access::Action;
use crate::domain::names::ShortName as _;
use crate::domain::timestamp::rfc3339;
use crate::proto::{
    Direction, EnvelopeKind, HandlingCode, Message, MessageState, OutcomeKind, PeerInfo, Precedence,
    RequestType,
};

/// One term of a definition list and its value.
fn definition(term: &str, value: impl Render) -> Markup {
    html! {
        dt { (term) }
        dd { (value) }
    }
}

/// A message with every field, its chain, its timeline and what this role may do with it.
/// `refusal` is shown above the actions when the last action was refused.
pub fn message(
    frame: &Frame<'_>,
    message: &Message,
    replies: &[Message],
    peer: Option<&PeerInfo>,
    refusal: Option<&str>,
) -> String {
    let s = frame.strings;
    let e = message.envelope.clone().unwrap_or_default();
    let outbound = message.direction() == Direction::Outbound;
    let content = html! {
        @if e.exercise { p.exercise-banner role="note" { (s.exercise_banner) } }
        section {
            h2 { (s.section_fields) }
            dl.fields {
                (definition("id", html! { code { (e.id) } }))
                (definition("kind", e.kind().short_name()))
                (definition("request_type", e.request_type().short_name()))
                (definition("precedence", html! { (precedence_badge(e.precedence())) (super::exercise_badge(s, e.exercise)) }))
                (definition("state", html! {
                    (state_badge(message.state())) (overdue_badge(s, message.overdue)) (closed_badge(s, message))
                }))
                @if let Some(at) = &message.closed_at {
                    (definition("closed_at", time(Some(at))))
                    (definition("closed_by", foreign(&message.closed_by)))
                    @if !message.close_reason.is_empty() {
                        (definition("close_reason", foreign(&message.close_reason)))
                    }
                }
                @if let Some(at) = &message.content_removed_at {
                    (definition("content_removed_at", html! { (time(Some(at))) " " span.badge-closed { (s.content_removed) } }))
                    (definition("content_removed", message.content_removed.join(", ")))
                    (definition("envelope_sha256", html! { code.digest { (hex::encode(&message.envelope_sha256)) } }))
                }
                (definition("origin", foreign(&e.origin)))
                (definition("destination", foreign(&e.destination)))
                (definition("case_reference", foreign(&e.case_reference)))
                (definition("subject", foreign(&e.subject)))
                (definition("body", html! { pre.body { (foreign_block(&e.body)) } }))
                (definition("language", foreign(&e.language)))
                (definition("created_at", time(e.created_at.as_ref())))
                (definition("expires_at", time(e.expires_at.as_ref())))
                (definition("ack_deadline", time(message.ack_deadline.as_ref())))
                (definition("received_at", time(message.received_at.as_ref())))
                (definition("handling_code", e.handling_code().short_name()))
                (definition("handling_restrictions", foreign_block(&e.handling_restrictions)))
                // A follow-up of a preservation: what the other desk asks or tells.
                @if let Some(f) = &e.follow_up {
                    @if let Some(until) = &f.extend_until {
                        (definition("follow_up.extend_until", html! { span.extend-until { (time(Some(until))) } }))
                    }
                    @if !f.mla_reference.is_empty() {
                        (definition("follow_up.mla_reference", foreign(&f.mla_reference)))
                    }
                }
                @if outbound {
                    (definition("attempts", message.attempts))
                    (definition("next_attempt_at", time(message.next_attempt_at.as_ref())))
                    (definition("last_error", foreign(&message.last_error)))
                }
            }
        }
        @if let Some(peer) = peer {
            section.who-to-call {
                h2 { (s.who_to_call) ": " (foreign(&peer.peer)) " " small { (foreign(&peer.name)) } }
                @if outbound && !crate::domain::local_time::suits_working_languages(&e.language, &peer.languages) {
                    p.warning { (s.language_not_listed) }
                }
                dl.fields { (super::who_to_call(s, peer)) }
            }
        }
        @if message.outcome.is_some() || message.preserved_until.is_some() || !message.mla_reference.is_empty() {
            section.outcome {
                h2 { (s.section_outcome) }
                dl.fields { (super::outcome_definitions(s, message)) }
            }
        }
        @if let Some(p) = &e.preservation {
            section {
                h2 { (s.section_preservation) }
                dl.fields { (super::preservation_definitions(s, p)) }
            }
        }
        @if !e.attachments.is_empty() {
            section {
                h2 { (s.section_attachments) }
                div.table-wrap {
                    table {
                        thead {
                            tr { th { "name" } th { "media_type" } th { "size_bytes" } th { "SHA-256" } }
                        }
                        tbody {
                            @for a in &e.attachments {
                                tr {
                                    td { a href={ "/message/" (e.id) "/attachment/" (hex::encode(&a.sha256)) } { (foreign(&a.name)) } }
                                    td { (foreign(&a.media_type)) }
                                    td { (a.size_bytes) }
                                    td { code.digest { (hex::encode(&a.sha256)) } }
                                }
                            }
                        }
                    }
                }
            }
        }
        p.no-print { a href={ "/print/" (e.id) } { (s.printable_view) } }
        section {
            h2 { (s.section_chain) }
            @if !e.in_reply_to.is_empty() {
                p { (s.answers) " " a href={ "/message/" (e.in_reply_to) } { code { (e.in_reply_to) } } }
            }
            @if replies.is_empty() {
                p.empty { (s.no_replies) }
            } @else {
                ul.chain {
                    @for r in replies {
                        @if let Some(re) = r.envelope.as_ref() {
                            li {
                                a href={ "/message/" (re.id) } {
                                    (kind_or_type(re.kind(), re.request_type()))
                                }
                                " " (foreign(&re.origin)) " → " (foreign(&re.destination)) " " (state_badge(r.state()))
                                " " (time(re.created_at.as_ref())) " " span.pre { (foreign_block(&re.body)) }
                            }
                        }
                    }
                }
            }
        }
        section {
            h2 { (s.section_timeline) }
            div.table-wrap {
                table.timeline {
                    thead {
                        tr {
                            @for column in [s.time_utc, s.time_local, s.col_state, s.note] {
                                th scope="col" { (column) }
                            }
                        }
                    }
                    tbody {
                        @for entry in &message.timeline {
                            @let utc = entry.at.as_ref().map(rfc3339).unwrap_or_default();
                            tr {
                                td { time datetime=(utc) { (utc) } }
                                td { time datetime=(utc) data-local-only {} }
                                td { (state_badge(entry.state())) }
                                td { (foreign(&entry.note)) }
                            }
                        }
                    }
                }
            }
        }
        section {
            h2 { (s.section_actions) }
            @if let Some(refusal) = refusal {
                p.refusal role="alert" { strong { (s.refused) ":" } " " (refusal) }
            }
            (actions(frame, message))
        }
    };
    let title = format!("{} {}", s.message_title, foreign(&e.subject));
    layout(frame, "message", &title, &content.into_string())
}

/// The outcomes the answer form offers, in the order an officer thinks of them.
const OUTCOME_KINDS: [OutcomeKind; 6] = [
    OutcomeKind::Executed,
    OutcomeKind::PartlyExecuted,
    OutcomeKind::Refused,
    OutcomeKind::PreservationNotPossible,
    OutcomeKind::MoreInformationNeeded,
    OutcomeKind::Forwarded,
];

/// The outcome's fields on the answer form: proto name (the form field's name), element id,
/// input type.
const OUTCOME_FORM_FIELDS: [(&str, &str, &str); 6] = [
    ("outcome.preserved_until", "respond-preserved-until", "date"),
    ("outcome.reference", "respond-reference", "text"),
    ("outcome.refusal_grounds", "respond-grounds", "text"),
    ("outcome.forwarded_to", "respond-forwarded-to", "text"),
    ("outcome.traffic_data.provider_or_path", "respond-provider-or-path", "text"),
    ("outcome.traffic_data.third_state", "respond-third-state", "text"),
];

/// The buttons this viewer's role may use on this message in its state.
fn actions(frame: &Frame<'_>, message: &Message) -> Markup {
    let s = frame.strings;
    let e = message.envelope.clone().unwrap_or_default();
    let is_request = e.kind() == EnvelopeKind::Request;
    let state = message.state();
    // A closed case takes no more actions (the desk refuses them too).
    let closed = message.closed_at.is_some();
    let inbound_request = is_request && !closed && message.direction() == Direction::Inbound;
    let outbound_request = is_request && !closed && message.direction() == Direction::Outbound;
    let answerable = matches!(state, MessageState::Received | MessageState::Acknowledged);
    let open = !matches!(state, MessageState::Cancelled | MessageState::Expired | MessageState::Answered);
    let acknowledge = inbound_request && state == MessageState::Received && frame.may(Action::Acknowledge);
    let dispute = inbound_request && answerable && frame.may(Action::DisputePrecedence);
    let respond = inbound_request && answerable && frame.may(Action::Respond);
    let cancel = outbound_request && open && frame.may(Action::Cancel);
    let requeue = message.direction() == Direction::Outbound
        && state == MessageState::Expired
        && frame.may(Action::Requeue);
    let waits_to_be_sent = matches!(state, MessageState::Queued | MessageState::WaitingRetry);
    let close = is_request && !closed && !waits_to_be_sent && frame.may(Action::CloseCase);
    // The follow-ups go on the preservation itself (where its date is), once it reached the
    // other State and while the case is open.
    let follow_up = outbound_request
        && e.request_type() == RequestType::Preservation
        && e.follow_up.is_none()
        && matches!(state, MessageState::Delivered | MessageState::Acknowledged | MessageState::Answered)
        && frame.may(Action::Submit);
    let current = e.precedence();
    let others = [Precedence::Flash, Precedence::Immediate, Precedence::Priority, Precedence::Routine]
        .into_iter()
        .filter(|p| *p != current);
    let action = |verb: &str| format!("/message/{}/{verb}", e.id);
    html! {
        @if acknowledge {
            form.action method="post" action=(action("acknowledge")) {
                input type="hidden" name="csrf" value=(frame.token);
                label for="ack-note" { (s.acknowledge_note) }
                input #ack-note name="note" type="text";
                button.primary type="submit" { (s.acknowledge) }
            }
        }
        @if dispute {
            form.action method="post" action=(action("dispute")) data-confirm=(s.dispute_confirm) {
                input type="hidden" name="csrf" value=(frame.token);
                label for="dispute-precedence" { (s.dispute_precedence) }
                select #dispute-precedence name="precedence" {
                    @for p in others {
                        option value=(p.short_name()) { (p.short_name()) }
                    }
                }
                label for="dispute-reason" { (s.dispute_reason) }
                input #dispute-reason name="reason" type="text" required;
                button type="submit" { (s.dispute) }
            }
        }
        @if respond {
            form.action method="post" action=(action("respond")) data-confirm=(s.respond_confirm) {
                input type="hidden" name="csrf" value=(frame.token);
                label for="respond-text" { (s.respond_text) }
                textarea #respond-text name="text" rows="4" required {}
                // The answering State sets the conditions on its own data.
                label for="respond-handling" { (s.respond_handling) }
                select #respond-handling name="handling_code" {
                    option value="" selected { (s.respond_handling_default) " (" (e.handling_code().short_name()) ")" }
                    @for code in [HandlingCode::H0, HandlingCode::H1, HandlingCode::H2, HandlingCode::H3] {
                        option value=(code.as_str_name()) { (code.short_name()) }
                    }
                }
                label for="respond-restrictions" { (s.respond_restrictions) }
                input #respond-restrictions name="handling_restrictions" type="text";
                // The typed outcome beside the text; the desk says which field is missing.
                fieldset.outcome {
                    legend { (s.field_label("outcome.kind")) }
                    p.hint { (s.respond_outcome_hint) }
                    label for="respond-outcome" { (s.field_label("outcome.kind")) }
                    select #respond-outcome name="outcome" {
                        option value="" selected { (s.respond_outcome_none) }
                        @for kind in OUTCOME_KINDS {
                            option value=(kind.short_name()) { (kind.short_name()) }
                        }
                    }
                    @for (name, id, kind) in OUTCOME_FORM_FIELDS {
                        label for=(id) { (s.field_label(name)) }
                        input id=(id) name=(name) type=(kind);
                    }
                }
                button type="submit" { (s.respond) }
            }
        }
        @if cancel {
            form.action method="post" action=(action("cancel")) data-confirm=(s.cancel_confirm) {
                input type="hidden" name="csrf" value=(frame.token);
                label for="cancel-reason" { (s.cancel_reason) }
                input #cancel-reason name="reason" type="text" required;
                button.danger type="submit" { (s.cancel) }
            }
        }
        @if requeue {
            form.action method="post" action=(action("requeue")) data-confirm=(s.requeue_confirm) {
                input type="hidden" name="csrf" value=(frame.token);
                button type="submit" { (s.requeue) }
            }
        }
        @if close {
            form.action method="post" action=(action("close")) data-confirm=(s.close_confirm) {
                input type="hidden" name="csrf" value=(frame.token);
                label for="close-reason" { (s.close_reason) }
                input #close-reason name="reason" type="text";
                button.danger type="submit" { (s.close_case) }
            }
        }
        @if follow_up {
            p.hint { (s.follow_up_hint) }
            form.action method="post" action=(action("extend")) data-confirm=(s.extend_confirm) {
                input type="hidden" name="csrf" value=(frame.token);
                label for="extend-until" { (s.extend_until) }
                input #extend-until name="follow_up.extend_until" type="date" required;
                label for="extend-text" { (s.follow_up_text) }
                input #extend-text name="text" type="text";
                button type="submit" { (s.extend) }
            }
            form.action method="post" action=(action("mla-sent")) data-confirm=(s.mla_sent_confirm) {
                input type="hidden" name="csrf" value=(frame.token);
                label for="mla-reference" { (s.mla_reference) }
                input #mla-reference name="follow_up.mla_reference" type="text" required;
                label for="mla-text" { (s.follow_up_text) }
                input #mla-text name="text" type="text";
                button type="submit" { (s.mla_sent) }
            }
        }
        @if !(acknowledge || dispute || respond || cancel || requeue || close || follow_up) {
            p.empty { (s.no_actions) }
        }
    }
}
