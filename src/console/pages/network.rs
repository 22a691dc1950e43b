//! The network page: one tile per peer, with its queue over the last hour.

use maud::{PreEscaped, html};

use super::{Frame, foreign, layout, ticking_age, time, who_to_call};
use crate::domain::names::ShortName as _;
use crate::proto::{GetQueueResponse, ListPeersResponse};

/// The network page: one tile per peer.
pub fn network(
    frame: &Frame<'_>,
    peers: &ListPeersResponse,
    queue: &GetQueueResponse,
    chart: &dyn Fn(&str) -> String,
) -> String {
    let s = frame.strings;
    let content = html! {
        div.tiles {
            @for peer in &peers.peers {
                @let q = queue.peers.iter().find(|q| q.peer == peer.peer).cloned().unwrap_or_default();
                @let depth = q.flash + q.immediate + q.priority + q.routine;
                @let connection = peer.connection().short_name();
                @let error = if peer.last_error.is_empty() {
                    crate::runtime::peer_board::last_error_note(
                        &q.last_error,
                        q.last_error_at.as_ref().map(crate::domain::timestamp::to_system),
                        q.last_success_at.as_ref().map(crate::domain::timestamp::to_system),
                    )
                } else {
                    crate::runtime::peer_board::last_error_note(
                        &peer.last_error,
                        peer.last_error_at.as_ref().map(crate::domain::timestamp::to_system),
                        peer.last_contact_at.as_ref().map(crate::domain::timestamp::to_system),
                    )
                };
                article.tile.(format!("conn-{}", connection.to_ascii_lowercase())) data-peer=(peer.peer) {
                    h2 { (foreign(&peer.peer)) " " small { (foreign(&peer.name)) } }
                    dl {
                        dt { (s.connection) }
                        dd { (connection) }
                        dt { (s.queue_depth) }
                        dd {
                            (depth) " "
                            small {
                                "(FLASH " (q.flash) ", IMMEDIATE " (q.immediate)
                                ", PRIORITY " (q.priority) ", ROUTINE " (q.routine) ")"
                            }
                        }
                        dt { (s.oldest_waiting) }
                        dd {
                            @if depth > 0 { (ticking_age(q.oldest_created_at.as_ref())) } @else { "–" }
                        }
                        dt { (s.last_contact) }
                        dd {
                            @match &peer.last_contact_at {
                                Some(at) => { (ticking_age(Some(at))) }
                                None => { (s.never) }
                            }
                        }
                        dt { (s.certificate_expiry) }
                        dd { (time(peer.certificate_expires_at.as_ref())) }
                        dt { (s.col_last_error) }
                        dd.error { (foreign(&error)) }
                        (who_to_call(s, peer))
                    }
                    figure {
                        figcaption { (s.queue_chart) }
                        // The console passes `history::chart`, an SVG template that escapes its label.
                        (PreEscaped(chart(&peer.peer)))
                    }
                }
            }
        }
        @if !peers.warnings.is_empty() {
            section {
                h2 { (s.warnings) }
                ul {
                    @for warning in &peers.warnings {
                        li { (foreign(warning)) }
                    }
                }
            }
        }
    };
    layout(frame, "network", s.network_title, &content.into_string())
}
