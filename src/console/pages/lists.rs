//! The inbox and the outbox: one table row per message.

use maud::{Markup, html};

use super::{
    Frame, foreign, kind_or_type, layout, overdue_badge, precedence_badge, state_badge, ticking_age, time,
};
use crate::domain::names::ShortName as _;
use crate::proto::Message;

/// The rows of the inbox table (also served alone, for the live refresh).
pub fn inbox_rows(frame: &Frame<'_>, messages: &[Message]) -> String {
    rows(frame, messages).into_string()
}

fn rows(frame: &Frame<'_>, messages: &[Message]) -> Markup {
    html! {
        @for m in messages {
            @if let Some(e) = m.envelope.as_ref() {
                @let precedence = e.precedence().short_name();
                tr.(format!("row-{}", precedence.to_ascii_lowercase())).overdue[m.overdue]
                    data-id=(e.id) data-precedence=(precedence) data-state=(m.state().short_name())
                {
                    td { (precedence_badge(e.precedence())) (overdue_badge(frame.strings, m.overdue)) }
                    td { (state_badge(m.state())) }
                    td { (foreign(&e.origin)) }
                    td { (kind_or_type(e.kind(), e.request_type())) }
                    td { a href={ "/message/" (e.id) } { (foreign(&e.subject)) } }
                    td { (ticking_age(e.created_at.as_ref())) }
                    td { (time(m.ack_deadline.as_ref())) }
                }
            }
        }
    }
}

/// The inbox page.
pub fn inbox(frame: &Frame<'_>, messages: &[Message]) -> String {
    let s = frame.strings;
    let columns =
        [s.col_precedence, s.col_state, s.col_from, s.col_type, s.col_subject, s.col_age, s.col_deadline];
    let content = html! {
        div.table-wrap {
            table.messages #inbox {
                thead {
                    tr {
                        @for column in columns {
                            th scope="col" { (column) }
                        }
                    }
                }
                tbody #inbox-rows { (rows(frame, messages)) }
            }
        }
        @if messages.is_empty() {
            p.empty { (s.inbox_empty) }
        }
    };
    layout(frame, "inbox", s.inbox_title, &content.into_string())
}

/// The outbox page: state, last error, next retry and deadline of what this node sent.
pub fn outbox(frame: &Frame<'_>, messages: &[Message]) -> String {
    let s = frame.strings;
    let columns = [
        s.col_precedence,
        s.col_state,
        s.col_to,
        s.col_type,
        s.col_subject,
        s.col_age,
        s.col_deadline,
        s.col_attempts,
        s.col_next_retry,
        s.col_last_error,
    ];
    let content = html! {
        div.table-wrap {
            table.messages #outbox {
                thead {
                    tr {
                        @for column in columns {
                            th scope="col" { (column) }
                        }
                    }
                }
                tbody {
                    @for m in messages {
                        @if let Some(e) = m.envelope.as_ref() {
                            tr data-id=(e.id) {
                                td { (precedence_badge(e.precedence())) (overdue_badge(s, m.overdue)) }
                                td { (state_badge(m.state())) }
                                td { (foreign(&e.destination)) }
                                td { (kind_or_type(e.kind(), e.request_type())) }
                                td { a href={ "/message/" (e.id) } { (foreign(&e.subject)) } }
                                td { (ticking_age(e.created_at.as_ref())) }
                                td { (time(m.ack_deadline.as_ref())) }
                                td { (m.attempts) }
                                td { (time(m.next_attempt_at.as_ref())) }
                                td.error { (foreign(&m.last_error)) }
                            }
                        }
                    }
                }
            }
        }
        @if messages.is_empty() {
            p.empty { (s.outbox_empty) }
        }
    };
    layout(frame, "outbox", s.outbox_title, &content.into_string())
}
