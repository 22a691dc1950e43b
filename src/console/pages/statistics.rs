//! The statistics page: a period, then the counts and the times of the requests created in it.
//! Counts and times only; the desk's `statistics` never hands content to this page.

use maud::html;

use super::{Frame, field_id, foreign, layout};
use crate::desk::statistics::{direction_word, measure_words, seconds_words as seconds};
use crate::domain::lifecycle::state_name;
use crate::domain::names::ShortName as _;
use crate::proto::GetStatisticsResponse;

/// The page: the period form (with `errors` as (field, message) next to their inputs) and, when
/// read, the figures.
pub fn statistics(
    frame: &Frame<'_>,
    from: &str,
    to: &str,
    figures: Option<&GetStatisticsResponse>,
    errors: &[(String, String)],
) -> String {
    let s = frame.strings;
    let error_of = |field: &str| errors.iter().find(|(f, _)| f == field).map(|(_, m)| m.clone());
    let content = html! {
        p.hint { (s.statistics_hint) }
        form.search method="get" action="/statistics" {
            @for (name, label, value) in [("from", s.statistics_from, from), ("to", s.statistics_to, to)] {
                @let error = error_of(name);
                label {
                    (label) " "
                    input id=(field_id(name)) name=(name) type="date" value=(value)
                        aria-invalid=[error.as_ref().map(|_| "true")];
                }
                @if let Some(error) = error { span.field-error { (foreign(&error)) } }
            }
            button type="submit" { (s.statistics_show) }
        }
        @if let Some(figures) = figures {
            @if figures.exercises_excluded > 0 {
                p.hint { (s.statistics_exercises) " " (figures.exercises_excluded) }
            }
            section {
                h2 { (s.statistics_counts) }
                @if figures.rows.is_empty() {
                    p.empty { (s.statistics_none) }
                } @else {
                    div.table-wrap { table.statistics {
                        thead { tr { @for column in s.statistics_count_columns { th { (column) } } } }
                        tbody {
                            @for row in &figures.rows {
                                tr {
                                    td { (direction_word(row.direction())) }
                                    td { (row.request_type().short_name()) }
                                    td { (row.precedence().short_name()) }
                                    td { (foreign(&row.peer)) }
                                    td { (state_name(row.state())) }
                                    td { @if row.outcome() != crate::proto::OutcomeKind::Unspecified { (row.outcome().short_name()) } }
                                    td.count { (row.count) }
                                }
                            }
                        }
                    } }
                }
            }
            @if !figures.times.is_empty() {
                section {
                    h2 { (s.statistics_times) }
                    div.table-wrap { table.statistics {
                        thead { tr { @for column in s.statistics_time_columns { th { (column) } } } }
                        tbody {
                            @for t in &figures.times {
                                tr {
                                    td { (direction_word(t.direction())) " " (measure_words(t.measure())) }
                                    td.count { (t.count) }
                                    td.count { (seconds(t.p50_seconds)) }
                                    td.count { (seconds(t.p90_seconds)) }
                                }
                            }
                        }
                    } }
                }
            }
        }
    };
    layout(frame, "statistics", s.statistics_title, &content.into_string())
}
