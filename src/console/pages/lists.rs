//! The inbox and the outbox: a search form, one table row per message, a link to the next page.

use maud::{Markup, html};

use super::{
    Frame, closed_badge, exercise_badge, foreign, kind_or_type, layout, overdue_badge, precedence_badge,
    state_badge, ticking_age, time,
};
use crate::domain::names::ShortName as _;
use crate::proto::Message;

/// What a listing page searches for and where it starts, as its query string carries it.
#[derive(Debug, Clone, Default)]
pub struct ListSearch {
    /// Words of the subject or body (`q`).
    pub text: String,
    /// Case reference (`case`).
    pub case_reference: String,
    /// Peer node code (`peer`).
    pub peer: String,
    /// The page token (`page`); empty for the first page.
    pub page: String,
}

impl ListSearch {
    /// The query string of this search at page `token` (no page when empty).
    fn query(&self, token: &str) -> String {
        let mut pairs = vec![
            ("q", self.text.as_str()),
            ("case", self.case_reference.as_str()),
            ("peer", self.peer.as_str()),
        ];
        pairs.push(("page", token));
        let query: Vec<String> = pairs
            .into_iter()
            .filter(|(_, value)| !value.is_empty())
            .map(|(name, value)| format!("{name}={}", super::super::percent_path(value)))
            .collect();
        query.join("&")
    }

    fn is_empty(&self) -> bool {
        self.text.is_empty() && self.case_reference.is_empty() && self.peer.is_empty() && self.page.is_empty()
    }
}

/// The search form and, when there is one, the link to the next page.
fn search_form(frame: &Frame<'_>, path: &str, search: &ListSearch) -> Markup {
    let s = frame.strings;
    html! {
        form.search method="get" action=(path) role="search" {
            label { (s.search_text) " " input name="q" type="search" value=(search.text); }
            label { (s.search_case) " " input name="case" type="text" value=(search.case_reference); }
            label { (s.search_peer) " " input name="peer" type="text" size="3" value=(search.peer); }
            button type="submit" { (s.search_button) }
            @if !search.is_empty() {
                " " a href=(path) { (s.search_clear) }
            }
        }
    }
}

/// The link to the next page, if any.
fn next_link(frame: &Frame<'_>, path: &str, search: &ListSearch, next_page_token: &str) -> Markup {
    html! {
        @if !next_page_token.is_empty() {
            p.pages { a rel="next" href={ (path) "?" (search.query(next_page_token)) } { (frame.strings.next_page) } }
        }
    }
}

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
                    td { (precedence_badge(e.precedence())) (overdue_badge(frame.strings, m.overdue)) (closed_badge(frame.strings, m)) (exercise_badge(frame.strings, e.exercise)) }
                    td { (state_badge(m.state())) (super::outcome_badge(m)) }
                    td { (foreign(&e.origin)) }
                    td { (kind_or_type(e.kind(), e.request_type())) }
                    td { a href={ "/message/" (e.id) } { (subject_or_removed(frame.strings, m, &e.subject)) } }
                    td { (ticking_age(e.created_at.as_ref())) }
                    td { (time(m.ack_deadline.as_ref())) }
                }
            }
        }
    }
}

/// The inbox page: one page of `search`, with the link to the page after it.
pub fn inbox(frame: &Frame<'_>, messages: &[Message], search: &ListSearch, next_page_token: &str) -> String {
    let s = frame.strings;
    let columns =
        [s.col_precedence, s.col_state, s.col_from, s.col_type, s.col_subject, s.col_age, s.col_deadline];
    let content = html! {
        (search_form(frame, "/inbox", search))
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
        (next_link(frame, "/inbox", search, next_page_token))
    };
    layout(frame, "inbox", s.inbox_title, &content.into_string())
}

/// The outbox page: state, last error, next retry and deadline of what this node sent; one page
/// of `search`, with the link to the page after it.
pub fn outbox(frame: &Frame<'_>, messages: &[Message], search: &ListSearch, next_page_token: &str) -> String {
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
        (search_form(frame, "/outbox", search))
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
                                td { (precedence_badge(e.precedence())) (overdue_badge(s, m.overdue)) (closed_badge(s, m)) (exercise_badge(s, e.exercise)) }
                                td { (state_badge(m.state())) (super::outcome_badge(m)) }
                                td { (foreign(&e.destination)) }
                                td { (kind_or_type(e.kind(), e.request_type())) }
                                td { a href={ "/message/" (e.id) } { (subject_or_removed(s, m, &e.subject)) } }
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
        (next_link(frame, "/outbox", search, next_page_token))
    };
    layout(frame, "outbox", s.outbox_title, &content.into_string())
}

/// A list's subject cell: the subject, or that retention removed it (a closed case).
fn subject_or_removed(
    strings: &crate::console::strings::Catalogue,
    message: &crate::proto::Message,
    subject: &str,
) -> maud::Markup {
    maud::html! {
        @if message.content_removed_at.is_some() {
            em { (strings.content_removed) }
        } @else {
            (foreign(subject))
        }
    }
}
