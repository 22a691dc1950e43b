//! The printable view of a case, for the prosecutor's file: the request with every field and
//! its timeline, the chain of replies with their texts, and each envelope's proof fingerprints
//! (the SHA-256 its origin signed and its receiver receipted, and the certificates' SHA-256), so
//! a paper copy can be matched to the proof files `hanoi247 verify` checks. The layout's print
//! style sheet leaves out navigation and buttons.

use maud::{Markup, html};

use super::{Frame, foreign, foreign_block, kind_or_type, layout, precedence_badge, state_badge, time};
use crate::domain::names::ShortName as _;
use crate::domain::timestamp::rfc3339;
use crate::proto::{GetProofResponse, Message};
use crate::trust::signing::sha256;

/// A message of the case and its proof, if it has one.
pub type WithProof<'a> = (&'a Message, Option<&'a GetProofResponse>);

/// The case `request` starts (or continues), with `replies`, each with its proof.
pub fn case_print(frame: &Frame<'_>, request: WithProof<'_>, replies: &[WithProof<'_>]) -> String {
    let s = frame.strings;
    let e = request.0.envelope.clone().unwrap_or_default();
    let printed = rfc3339(&crate::domain::timestamp::now());
    let content = html! {
        p.print-meta {
            (s.printed) " " (printed) " · " (frame.node) " · " (frame.name.unwrap_or_default())
            " · " (e.handling_code().short_name())
            @if !e.handling_restrictions.is_empty() { " — " (foreign(&e.handling_restrictions)) }
        }
        p.no-print.hint { (s.print_hint) }
        @if e.exercise { p.exercise-banner role="note" { (s.exercise_banner) } }
        section.print-request {
            h2 { (kind_or_type(e.kind(), e.request_type())) " " (precedence_badge(e.precedence())) " "
                (state_badge(request.0.state())) }
            dl.fields {
                dt { "id" } dd { code { (e.id) } }
                dt { "origin → destination" } dd { (foreign(&e.origin)) " → " (foreign(&e.destination)) }
                dt { "subject" } dd { (foreign(&e.subject)) }
                dt { "created_at" } dd { (time(e.created_at.as_ref())) }
                dt { "expires_at" } dd { (time(e.expires_at.as_ref())) }
                dt { "received_at" } dd { (time(request.0.received_at.as_ref())) }
                dt { "language" } dd { (foreign(&e.language)) }
                dt { "body" } dd { pre.body { (foreign_block(&e.body)) } }
                @if let Some(p) = &e.preservation { (super::preservation_definitions(s, p)) }
                (super::outcome_definitions(s, request.0))
            }
            (timeline(s.section_timeline, request.0))
        }
        @if !replies.is_empty() {
            section {
                h2 { (s.section_chain) }
                @for (reply, _) in replies {
                    @let r = reply.envelope.clone().unwrap_or_default();
                    article.print-reply {
                        h3 {
                            (kind_or_type(r.kind(), r.request_type())) " · " (foreign(&r.origin)) " → "
                            (foreign(&r.destination)) " · " (time(r.created_at.as_ref())) " " (state_badge(reply.state()))
                        }
                        // A response carries the answering State's own conditions.
                        p.print-meta {
                            (r.handling_code().short_name())
                            @if !r.handling_restrictions.is_empty() { " — " (foreign(&r.handling_restrictions)) }
                        }
                        @if r.outcome.is_some() {
                            dl.fields { (super::outcome_definitions(s, &crate::proto::Message {
                                outcome: r.outcome.clone(),
                                ..Default::default()
                            })) }
                        }
                        @if !r.body.is_empty() { pre.body { (foreign_block(&r.body)) } }
                    }
                }
            }
        }
        section.print-proofs {
            h2 { (s.section_proofs) }
            p.hint { (s.proofs_hint) }
            div.table-wrap { table {
                thead { tr { @for column in s.proof_columns { th scope="col" { (column) } } } }
                tbody {
                    @for (message, proof) in std::iter::once(&request).chain(replies) {
                        (proof_row(frame, message, *proof))
                    }
                }
            } }
        }
    };
    let title = format!("{} {} · {}", s.case_title, foreign(&e.case_reference), foreign(&e.subject));
    layout(frame, "print", &title, &content.into_string())
}

/// One envelope's fingerprints: what its origin signed, who signed, and its receipt.
fn proof_row(frame: &Frame<'_>, message: &Message, proof: Option<&GetProofResponse>) -> Markup {
    let s = frame.strings;
    let e = message.envelope.clone().unwrap_or_default();
    let short = |bytes: &[u8]| hex::encode(sha256(bytes));
    html! {
        tr {
            td { (kind_or_type(e.kind(), e.request_type())) br; code.digest { (e.id) } }
            @match proof {
                Some(proof) => {
                    td { code.digest { (short(&proof.envelope_canonical)) } }
                    td { (foreign(&e.origin)) br; code.digest { (short(&proof.origin_certificate)) } }
                    td {
                        @match &proof.receipt {
                            Some(receipt) => {
                                (foreign(&receipt.receiver)) " " (time(receipt.received_at.as_ref())) br;
                                code.digest { (short(&receipt.receiver_certificate)) }
                            }
                            None => { (s.no_receipt) }
                        }
                    }
                }
                None => { td colspan="3" { (s.no_proof) } }
            }
        }
    }
}

/// A message's timeline as a compact table (UTC times: paper has no local time zone).
fn timeline(heading: &str, message: &Message) -> Markup {
    html! {
        h3 { (heading) }
        table.timeline {
            tbody {
                @for entry in &message.timeline {
                    tr {
                        td { (entry.at.as_ref().map(rfc3339).unwrap_or_default()) }
                        td { (state_badge(entry.state())) }
                        td { (foreign(&entry.note)) }
                    }
                }
            }
        }
    }
}
