//! The console's pages as HTML: pure functions from what the desk API returned to a string.
//! They are maud templates, so every interpolated value is escaped unless a `PreEscaped` says
//! why it need not be; no inline script or style (the Content-Security-Policy forbids both),
//! so behaviour hangs off `data-` attributes that `console.js` reads.

mod lists;
mod message;
mod network;
mod new_request;
mod preservations;
mod print;
mod statistics;

use maud::{DOCTYPE, Markup, PreEscaped, html};
use prost_types::Timestamp;

use super::strings::Catalogue;
use crate::domain::access::{self, Action, Role};
use crate::domain::names::ShortName as _;
use crate::domain::timestamp::{age, rfc3339};
use crate::proto::{EnvelopeKind, MessageState, Precedence, RequestType};

pub use lists::{ListSearch, inbox, inbox_rows, outbox};
pub use message::message;
pub use network::network;
pub use new_request::new_request;
pub use preservations::preservations;
pub use print::{WithProof, case_print};
pub use statistics::statistics;

/// Foreign text for one line of a page: controls and bidi overrides shown as `\u{…}`
/// (`domain::text`); maud then escapes it for HTML.
pub fn foreign(text: &str) -> std::borrow::Cow<'_, str> {
    crate::domain::text::printable(text, false)
}

/// Foreign multi-line text (a body): tabs and newlines kept, other controls shown as `\u{…}`.
pub fn foreign_block(text: &str) -> std::borrow::Cow<'_, str> {
    crate::domain::text::printable(text, true)
}

/// Who is looking, for the frame of every page.
pub struct Frame<'a> {
    /// The words.
    pub strings: &'static Catalogue,
    /// This node's code.
    pub node: &'a str,
    /// The client name from the certificate, if it names a client of this node.
    pub name: Option<&'a str>,
    /// Its role, if it has one here.
    pub role: Option<Role>,
    /// The form token for this client's certificate.
    pub token: &'a str,
}

impl Frame<'_> {
    /// Whether the viewer's role may `action` (to show a button; the desk API decides).
    pub fn may(&self, action: Action) -> bool {
        self.role.is_some_and(|role| access::scope(role, action).is_some())
    }
}

/// The page around `content`: navigation, who is signed in, the form token for scripts, and
/// the live-update banner. `content` is HTML and goes in as it is: the pages pass what their
/// own templates rendered.
pub fn layout(frame: &Frame<'_>, page: &str, title: &str, content: &str) -> String {
    let s = frame.strings;
    // Only the pages this role can use (the desk API refuses the others anyway).
    let nav = [
        ("inbox", s.nav_inbox, "/inbox", "i", Action::ListInbox),
        ("outbox", s.nav_outbox, "/outbox", "o", Action::ListOutbox),
        ("new", s.nav_new, "/new", "n", Action::Submit),
        ("network", s.nav_network, "/network", "w", Action::ListPeers),
        ("statistics", s.nav_statistics, "/statistics", "s", Action::GetStatistics),
        ("expiring", s.nav_expiring, "/expiring", "p", Action::ListPreservations),
    ]
    .into_iter()
    .filter(|(.., action)| frame.may(*action));
    html! {
        (DOCTYPE)
        html lang=(s.lang) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="csrf-token" content=(frame.token);
                title { (title) " · " (frame.node) " · " (s.product) }
                link rel="stylesheet" href="/assets/console.css";
                script src="/assets/console.js" defer {}
            }
            body data-page=(page) data-live-on=(s.live_on) data-live-off=(s.live_off)
                data-attention-title=(s.attention_title) data-attention-from=(s.attention_from) {
                a.skip href="#main" { (s.skip_to_content) }
                header {
                    span.brand { (s.product) " · " (frame.node) }
                    nav {
                        @for (key, label, href, accesskey, _) in nav {
                            @let current = (key == page).then_some("page");
                            a href=(href) accesskey=(accesskey) aria-current=[current] { (label) }
                        }
                    }
                    span.who {
                        (s.signed_in_as) " "
                        @match (frame.name, frame.role) {
                            (Some(name), Some(role)) => { (name) " (" (role.name()) ")" }
                            (Some(name), None) => { (name) " (" (s.no_role) ")" }
                            (None, _) => { (s.no_role) }
                        }
                        " "
                        span #live .live aria-live="polite" {}
                        " "
                        // Shown by console.js only while the browser has not been answered.
                        button #allow-notifications .allow-notifications type="button" hidden {
                            (s.allow_notifications)
                        }
                    }
                }
                div #flash-banner .flash-banner role="alert" hidden {
                    a href="/inbox" { (s.flash_banner) }
                }
                main #main tabindex="-1" {
                    h1 { (title) }
                    // Unescaped on purpose: every page passes what its own template rendered,
                    // whose values that template escaped already.
                    (PreEscaped(content))
                }
            }
        }
    }
    .into_string()
}

/// The inbox as the desk works it (one rule, owned by `domain::order`).
pub use crate::domain::order::sort_for_desk;

fn precedence_badge(precedence: Precedence) -> Markup {
    let name = precedence.short_name();
    html! { span.prec.(format!("prec-{}", name.to_ascii_lowercase())) { (name) } }
}

fn state_badge(state: MessageState) -> Markup {
    let name = state.short_name();
    html! { span.state.(format!("state-{}", name.to_ascii_lowercase())) { (name) } }
}

fn overdue_badge(strings: &Catalogue, overdue: bool) -> Markup {
    html! {
        @if overdue {
            " " span.badge-overdue { (strings.overdue) }
        }
    }
}

/// "CLOSED" beside a closed case's state.
fn closed_badge(strings: &Catalogue, message: &crate::proto::Message) -> Markup {
    html! {
        @if message.closed_at.is_some() {
            " " span.badge-closed { (strings.closed) }
        }
    }
}

/// "EXERCISE" beside an exercise's precedence: a drill is never taken for a real request.
fn exercise_badge(strings: &Catalogue, exercise: bool) -> Markup {
    html! {
        @if exercise {
            " " span.badge-exercise { (strings.exercise) }
        }
    }
}

fn kind_or_type(kind: EnvelopeKind, request_type: RequestType) -> &'static str {
    match kind {
        EnvelopeKind::Request => request_type.short_name(),
        other => other.short_name(),
    }
}

/// A time for people: UTC text the script turns into the viewer's zone as well.
fn time(at: Option<&Timestamp>) -> Markup {
    html! {
        @match at.map(rfc3339) {
            Some(utc) => { time datetime=(utc) data-local { (utc) } }
            None => { "–" }
        }
    }
}

/// A peer's contact details from the signed directory, as `dt`/`dd` pairs: the phone (a `tel:`
/// link), its local time now and its working languages; "not listed" where the directory is
/// silent.
fn who_to_call(strings: &Catalogue, peer: &crate::proto::PeerInfo) -> Markup {
    let local = crate::domain::local_time::describe(&peer.local_time, &peer.time_zone);
    html! {
        dt { (strings.phone) }
        dd.phone {
            @if peer.phone.is_empty() { (strings.not_listed) }
            @else { a href={ "tel:" (peer.phone.replace(' ', "")) } { (foreign(&peer.phone)) } }
        }
        dt { (strings.local_time) }
        dd.local-time { @if local.is_empty() { (strings.not_listed) } @else { (foreign(&local)) } }
        dt { (strings.working_languages) }
        dd.languages {
            @if peer.languages.is_empty() { (strings.not_listed) } @else { (foreign(&peer.languages.join(", "))) }
        }
    }
}

/// A request's typed outcome beside its state in the lists (nothing when it has none).
fn outcome_badge(message: &crate::proto::Message) -> Markup {
    html! {
        @if let Some(o) = &message.outcome {
            " " span.badge-outcome { (o.kind().short_name()) }
        }
    }
}

/// A request's typed outcome (from its latest response that had one) and, for a preservation,
/// until when the data is kept, as `dt`/`dd` pairs (the message page and the printable view).
fn outcome_definitions(strings: &Catalogue, message: &crate::proto::Message) -> Markup {
    let label = |name| strings.field_label(name);
    html! {
        @if let Some(o) = &message.outcome {
            dt { (label("outcome.kind")) }
            dd { span.outcome { (o.kind().short_name()) } }
            @if !o.reference.is_empty() { dt { (label("outcome.reference")) } dd { (foreign(&o.reference)) } }
            @if !o.refusal_grounds.is_empty() {
                dt { (label("outcome.refusal_grounds")) } dd { span.pre { (foreign_block(&o.refusal_grounds)) } }
            }
            @if !o.forwarded_to.is_empty() { dt { (label("outcome.forwarded_to")) } dd { (foreign(&o.forwarded_to)) } }
            @if let Some(t) = &o.traffic_data {
                dt { (label("outcome.traffic_data.provider_or_path")) } dd { (foreign_block(&t.provider_or_path)) }
                @if !t.third_state.is_empty() {
                    dt { (label("outcome.traffic_data.third_state")) } dd { (foreign(&t.third_state)) }
                }
                @if !t.preservation_id.is_empty() {
                    dt { (label("outcome.traffic_data.preservation_id")) }
                    dd { a href={ "/message/" (t.preservation_id) } { code { (t.preservation_id) } } }
                }
            }
        }
        @if message.preserved_until.is_some() {
            dt { (label("outcome.preserved_until")) }
            dd.preserved-until { (time(message.preserved_until.as_ref())) }
        }
        @if !message.mla_reference.is_empty() {
            dt { (label("follow_up.mla_reference")) }
            dd.mla-sent { (foreign(&message.mla_reference)) " · " (time(message.mla_sent_at.as_ref())) }
        }
    }
}

/// A preservation request's typed fields as `dt`/`dd` pairs, labelled in the viewer's language
/// (the message page and the printable view).
fn preservation_definitions(strings: &Catalogue, p: &crate::proto::PreservationRequest) -> Markup {
    use crate::console::form::PRESERVATION_TEXT_FIELDS;
    let texts = [
        &p.requesting_authority,
        &p.offence,
        &p.facts,
        &p.data_to_preserve,
        &p.link_to_offence,
        &p.custodian_or_location,
        &p.necessity,
    ];
    html! {
        @for (name, value) in PRESERVATION_TEXT_FIELDS.iter().zip(texts) {
            dt { (strings.field_label(name)) }
            dd { span.pre { (foreign_block(value)) } }
        }
        dt { (strings.field_label("preservation.mutual_legal_assistance_to_follow")) }
        dd { (if p.mutual_legal_assistance_to_follow { strings.yes } else { strings.no }) }
        dt { (strings.field_label("preservation.preservation_days")) }
        dd { (p.preservation_days) }
    }
}

/// An age that the script keeps ticking.
fn ticking_age(at: Option<&Timestamp>) -> Markup {
    html! {
        @match at {
            Some(at) => { time datetime=(rfc3339(at)) data-age { (age(at)) } }
            None => { "–" }
        }
    }
}

/// An element id for a field name (`preservation.offence` → `f-preservation-offence`).
pub fn field_id(field: &str) -> String {
    format!("f-{}", field.replace(['.', '[', ']'], "-"))
}

/// A refusal page: what the node said, and the way back.
pub fn refusal(frame: &Frame<'_>, message: &str) -> String {
    let s = frame.strings;
    let content = html! {
        p.refusal role="alert" { (message) }
        p { a href="/inbox" { (s.back_to_inbox) } }
    };
    layout(frame, "error", s.error_title, &content.into_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::strings::ENGLISH;
    use crate::proto::{Envelope, GetQueueResponse, ListPeersResponse, Message, PeerInfo};

    fn message(precedence: Precedence, seconds: i64, overdue: bool) -> Message {
        Message {
            envelope: Some(Envelope {
                id: format!("{precedence:?}-{seconds}"),
                precedence: precedence as i32,
                created_at: Some(Timestamp { seconds, nanos: 0 }),
                ..Default::default()
            }),
            overdue,
            ..Default::default()
        }
    }

    #[test]
    fn the_desk_order_is_overdue_then_precedence_then_oldest() {
        let mut messages = vec![
            message(Precedence::Routine, 1, false),
            message(Precedence::Flash, 20, false),
            message(Precedence::Flash, 10, false),
            message(Precedence::Routine, 5, true),
            message(Precedence::Immediate, 1, false),
        ];
        sort_for_desk(&mut messages);
        let order: Vec<_> = messages.iter().map(|m| m.envelope.as_ref().unwrap().id.clone()).collect();
        assert_eq!(order, ["Routine-5", "Flash-10", "Flash-20", "Immediate-1", "Routine-1"]);
    }

    #[test]
    fn what_another_state_wrote_is_escaped_by_default() {
        let hostile = "<script>alert(\"pwned\")</script>";
        let escaped = "&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt;";
        let frame = Frame {
            strings: &ENGLISH,
            node: "VN",
            name: Some("officer"),
            role: Some(Role::Officer),
            token: "t",
        };
        let mut from_fr = message(Precedence::Flash, 1, false);
        if let Some(e) = from_fr.envelope.as_mut() {
            e.origin = format!("FR\"{hostile}");
            e.subject = hostile.to_owned();
            e.body = hostile.to_owned();
        }
        // Directory values are signed by the secretariat, and escaped all the same.
        let fr = PeerInfo {
            peer: "FR".into(),
            name: hostile.into(),
            phone: hostile.into(),
            time_zone: hostile.into(),
            languages: vec![hostile.into()],
            ..Default::default()
        };
        let peers = ListPeersResponse {
            peers: vec![fr.clone()],
            warnings: vec![hostile.into()],
            ..Default::default()
        };
        let pages = [
            super::inbox(&frame, std::slice::from_ref(&from_fr), &super::ListSearch::default(), ""),
            super::message(&frame, &from_fr, &[], Some(&fr), Some(hostile)),
            super::network(&frame, &peers, &GetQueueResponse::default(), &|peer| {
                crate::console::history::chart(&[], std::time::SystemTime::UNIX_EPOCH, peer)
            }),
        ];
        for page in pages {
            assert!(!page.contains("<script>"), "{page}");
            assert!(!page.contains("tel:<"), "{page}");
            assert!(page.contains(escaped), "{page}");
        }
        let inbox = super::inbox(&frame, std::slice::from_ref(&from_fr), &super::ListSearch::default(), "");
        assert!(inbox.contains("<td>FR&quot;&lt;script&gt;"), "the quote is escaped too: {inbox}");
    }
}
