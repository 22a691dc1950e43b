//! The preservation clock: preservations sent and received, the soonest to lapse first, with
//! the days left, the outcome and whether the mutual legal assistance request was sent.

use maud::html;

use super::{Frame, field_id, foreign, layout, time};
use crate::domain::names::ShortName as _;
use crate::proto::{Direction, Message};

/// Whole days from `now` until `until` (negative once it lapsed), rounded down.
fn days_left(until: &prost_types::Timestamp, now: std::time::SystemTime) -> i64 {
    let now = crate::domain::timestamp::from_system(now);
    (until.seconds - now.seconds).div_euclid(86_400)
}

/// The page: the "within" filter (with `error` beside it) and the preservations, by the node's
/// clock `now`.
pub fn preservations(
    frame: &Frame<'_>,
    within: &str,
    messages: &[Message],
    now: std::time::SystemTime,
    error: Option<&str>,
) -> String {
    let s = frame.strings;
    let content = html! {
        p.hint { (s.expiring_hint) }
        form.search method="get" action="/expiring" {
            label {
                (s.expiring_within) " "
                input id=(field_id("within")) name="within" type="text" value=(within)
                    aria-invalid=[error.map(|_| "true")];
            }
            @if let Some(error) = error { span.field-error { (foreign(error)) } }
            button type="submit" { (s.expiring_show) }
        }
        @if messages.is_empty() {
            p.empty { (s.expiring_none) }
        } @else {
            div.table-wrap { table.preservations {
                thead { tr { @for column in s.expiring_columns { th scope="col" { (column) } } } }
                tbody {
                    @for m in messages {
                        @if let (Some(e), Some(until)) = (m.envelope.as_ref(), m.preserved_until.as_ref()) {
                            @let left = days_left(until, now);
                            tr data-id=(e.id) .lapsing[left < 7] {
                                td.count.days-left { (left) }
                                td { (time(Some(until))) }
                                td { (m.direction().short_name()) }
                                td { (foreign(if m.direction() == Direction::Inbound { &e.origin } else { &e.destination })) }
                                td { a href={ "/message/" (e.id) } { (foreign(&e.subject)) } }
                                td { (super::outcome_badge(m)) }
                                td { (foreign(&m.mla_reference)) }
                            }
                        }
                    }
                }
            } }
        }
    };
    layout(frame, "expiring", s.expiring_title, &content.into_string())
}
