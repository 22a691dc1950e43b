//! The console's pages as HTML: pure functions from what the desk API returned to a string.
//! Every value is escaped; no inline script or style (the Content-Security-Policy forbids both),
//! so behaviour hangs off `data-` attributes that `console.js` reads.

use std::fmt::Write as _;

use prost_types::Timestamp;

use super::form::{Form, PRESERVATION_TEXT_FIELDS};
use super::strings::Catalogue;
use crate::domain::access::{self, Action, Role};
use crate::domain::lifecycle::state_name;
use crate::domain::timestamp::{age, rfc3339};
use crate::proto::{
    Direction, EnvelopeKind, GetQueueResponse, HandlingCode, ListPeersResponse, Message, MessageState,
    Precedence, RequestType,
};

/// Escapes text for HTML element content and quoted attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
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
/// the live-update banner.
pub fn layout(frame: &Frame<'_>, page: &str, title: &str, content: &str) -> String {
    let s = frame.strings;
    let mut nav = String::new();
    // Only the pages this role can use (the desk API refuses the others anyway).
    for (key, label, href, accesskey, action) in [
        ("inbox", s.nav_inbox, "/inbox", "i", Action::ListInbox),
        ("outbox", s.nav_outbox, "/outbox", "o", Action::ListOutbox),
        ("new", s.nav_new, "/new", "n", Action::Submit),
        ("network", s.nav_network, "/network", "w", Action::ListPeers),
    ] {
        if !frame.may(action) {
            continue;
        }
        let current = if key == page { " aria-current=\"page\"" } else { "" };
        let _ = write!(nav, "<a href=\"{href}\" accesskey=\"{accesskey}\"{current}>{label}</a>");
    }
    let who = match (frame.name, frame.role) {
        (Some(name), Some(role)) => format!("{} ({})", esc(name), role.name()),
        (Some(name), None) => format!("{} ({})", esc(name), s.no_role),
        (None, _) => s.no_role.to_owned(),
    };
    format!(
        r##"<!DOCTYPE html>
<html lang="{lang}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="csrf-token" content="{token}">
<title>{title} · {node} · {product}</title>
<link rel="stylesheet" href="/assets/console.css">
<script src="/assets/console.js" defer></script>
</head>
<body data-page="{page}" data-live-on="{live_on}" data-live-off="{live_off}">
<a class="skip" href="#main">{skip}</a>
<header>
<span class="brand">{product} · {node}</span>
<nav>{nav}</nav>
<span class="who">{signed_in_as} {who} <span id="live" class="live" aria-live="polite"></span></span>
</header>
<div id="flash-banner" class="flash-banner" role="alert" hidden><a href="/inbox">{flash_banner}</a></div>
<main id="main" tabindex="-1">
<h1>{title}</h1>
{content}
</main>
</body>
</html>
"##,
        lang = s.lang,
        token = esc(frame.token),
        title = esc(title),
        node = esc(frame.node),
        product = s.product,
        page = page,
        live_on = esc(s.live_on),
        live_off = esc(s.live_off),
        skip = s.skip_to_content,
        signed_in_as = s.signed_in_as,
        flash_banner = s.flash_banner,
    )
}

fn precedence_of(message: &Message) -> Precedence {
    message.envelope.as_ref().map_or(Precedence::Unspecified, |e| e.precedence())
}

fn precedence_rank(precedence: Precedence) -> u8 {
    match precedence {
        Precedence::Flash => 0,
        Precedence::Immediate => 1,
        Precedence::Priority => 2,
        Precedence::Routine => 3,
        Precedence::Unspecified => 4,
    }
}

/// The order of the inbox: overdue first, then by precedence, then the longest waiting first.
pub fn sort_for_desk(messages: &mut [Message]) {
    messages.sort_by_key(|m| {
        let created = m.envelope.as_ref().and_then(|e| e.created_at).map(|t| (t.seconds, t.nanos));
        (!m.overdue, precedence_rank(precedence_of(m)), created)
    });
}

fn precedence_badge(precedence: Precedence) -> String {
    let name = precedence.as_str_name().trim_start_matches("PRECEDENCE_");
    let class = name.to_ascii_lowercase();
    format!("<span class=\"prec prec-{class}\">{name}</span>")
}

fn state_badge(state: MessageState) -> String {
    let name = state_name(state);
    format!("<span class=\"state state-{}\">{name}</span>", name.to_ascii_lowercase())
}

fn type_name(request_type: RequestType) -> &'static str {
    request_type.as_str_name().trim_start_matches("REQUEST_TYPE_")
}

/// A time for people: UTC text the script turns into the viewer's zone as well.
fn time(at: Option<&Timestamp>) -> String {
    match at {
        Some(at) => {
            let utc = rfc3339(at);
            format!("<time datetime=\"{utc}\" data-local>{utc}</time>")
        }
        None => "–".to_owned(),
    }
}

/// An age that the script keeps ticking.
fn ticking_age(at: Option<&Timestamp>) -> String {
    match at {
        Some(at) => format!("<time datetime=\"{}\" data-age>{}</time>", rfc3339(at), age(at)),
        None => "–".to_owned(),
    }
}

/// The rows of the inbox table (also served alone, for the live refresh).
pub fn inbox_rows(frame: &Frame<'_>, messages: &[Message]) -> String {
    let mut rows = String::new();
    for m in messages {
        let Some(e) = m.envelope.as_ref() else { continue };
        let precedence = e.precedence();
        let mut classes = vec![format!(
            "row-{}",
            precedence.as_str_name().trim_start_matches("PRECEDENCE_").to_ascii_lowercase()
        )];
        if m.overdue {
            classes.push("overdue".into());
        }
        let overdue = if m.overdue {
            format!(" <span class=\"badge-overdue\">{}</span>", frame.strings.overdue)
        } else {
            String::new()
        };
        let _ = writeln!(
            rows,
            "<tr class=\"{classes}\" data-id=\"{id}\" data-precedence=\"{prec}\" data-state=\"{state}\">\
             <td>{badge}{overdue}</td><td>{state_badge}</td><td>{from}</td><td>{kind}</td>\
             <td><a href=\"/message/{id}\">{subject}</a></td><td>{age}</td><td>{deadline}</td></tr>",
            classes = classes.join(" "),
            id = esc(&e.id),
            prec = precedence.as_str_name().trim_start_matches("PRECEDENCE_"),
            state = state_name(m.state()),
            badge = precedence_badge(precedence),
            state_badge = state_badge(m.state()),
            from = esc(&e.origin),
            kind = kind_or_type(e.kind(), e.request_type()),
            subject = esc(&e.subject),
            age = ticking_age(e.created_at.as_ref()),
            deadline = time(m.ack_deadline.as_ref()),
        );
    }
    rows
}

fn kind_or_type(kind: EnvelopeKind, request_type: RequestType) -> String {
    match kind {
        EnvelopeKind::Request => type_name(request_type).to_owned(),
        other => other.as_str_name().trim_start_matches("ENVELOPE_KIND_").to_owned(),
    }
}

/// The inbox page.
pub fn inbox(frame: &Frame<'_>, messages: &[Message]) -> String {
    let s = frame.strings;
    let empty =
        if messages.is_empty() { format!("<p class=\"empty\">{}</p>", s.inbox_empty) } else { String::new() };
    let content = format!(
        "<div class=\"table-wrap\"><table class=\"messages\" id=\"inbox\">\
         <thead><tr><th scope=\"col\">{p}</th><th scope=\"col\">{st}</th><th scope=\"col\">{from}</th>\
         <th scope=\"col\">{ty}</th><th scope=\"col\">{subj}</th><th scope=\"col\">{age}</th>\
         <th scope=\"col\">{deadline}</th></tr></thead>\n<tbody id=\"inbox-rows\">{rows}</tbody></table></div>{empty}",
        p = s.col_precedence,
        st = s.col_state,
        from = s.col_from,
        ty = s.col_type,
        subj = s.col_subject,
        age = s.col_age,
        deadline = s.col_deadline,
        rows = inbox_rows(frame, messages),
    );
    layout(frame, "inbox", s.inbox_title, &content)
}

/// The outbox page: state, last error, next retry and deadline of what this node sent.
pub fn outbox(frame: &Frame<'_>, messages: &[Message]) -> String {
    let s = frame.strings;
    let mut rows = String::new();
    for m in messages {
        let Some(e) = m.envelope.as_ref() else { continue };
        let overdue = if m.overdue {
            format!(" <span class=\"badge-overdue\">{}</span>", s.overdue)
        } else {
            String::new()
        };
        let _ = writeln!(
            rows,
            "<tr data-id=\"{id}\"><td>{badge}{overdue}</td><td>{state}</td><td>{to}</td><td>{kind}</td>\
             <td><a href=\"/message/{id}\">{subject}</a></td><td>{age}</td><td>{deadline}</td>\
             <td>{attempts}</td><td>{next}</td><td class=\"error\">{error}</td></tr>",
            id = esc(&e.id),
            badge = precedence_badge(e.precedence()),
            state = state_badge(m.state()),
            to = esc(&e.destination),
            kind = kind_or_type(e.kind(), e.request_type()),
            subject = esc(&e.subject),
            age = ticking_age(e.created_at.as_ref()),
            deadline = time(m.ack_deadline.as_ref()),
            attempts = m.attempts,
            next = time(m.next_attempt_at.as_ref()),
            error = esc(&m.last_error),
        );
    }
    let empty = if messages.is_empty() {
        format!("<p class=\"empty\">{}</p>", s.outbox_empty)
    } else {
        String::new()
    };
    let content = format!(
        "<div class=\"table-wrap\"><table class=\"messages\" id=\"outbox\"><thead><tr>\
         <th scope=\"col\">{p}</th><th scope=\"col\">{st}</th><th scope=\"col\">{to}</th><th scope=\"col\">{ty}</th>\
         <th scope=\"col\">{subj}</th><th scope=\"col\">{age}</th><th scope=\"col\">{deadline}</th>\
         <th scope=\"col\">{attempts}</th><th scope=\"col\">{next}</th><th scope=\"col\">{error}</th>\
         </tr></thead>\n<tbody>{rows}</tbody></table></div>{empty}",
        p = s.col_precedence,
        st = s.col_state,
        to = s.col_to,
        ty = s.col_type,
        subj = s.col_subject,
        age = s.col_age,
        deadline = s.col_deadline,
        attempts = s.col_attempts,
        next = s.col_next_retry,
        error = s.col_last_error,
    );
    layout(frame, "outbox", s.outbox_title, &content)
}

fn definition(out: &mut String, term: &str, value: &str) {
    let _ = write!(out, "<dt>{}</dt><dd>{value}</dd>", esc(term));
}

/// A message with every field, its chain, its timeline and what this role may do with it.
/// `refusal` is shown above the actions when the last action was refused.
pub fn message(frame: &Frame<'_>, message: &Message, replies: &[Message], refusal: Option<&str>) -> String {
    let s = frame.strings;
    let e = message.envelope.clone().unwrap_or_default();
    let mut fields = String::new();
    definition(&mut fields, "id", &format!("<code>{}</code>", esc(&e.id)));
    definition(&mut fields, "kind", e.kind().as_str_name().trim_start_matches("ENVELOPE_KIND_"));
    definition(&mut fields, "request_type", type_name(e.request_type()));
    definition(&mut fields, "precedence", &precedence_badge(e.precedence()));
    let overdue = if message.overdue {
        format!(" <span class=\"badge-overdue\">{}</span>", s.overdue)
    } else {
        String::new()
    };
    definition(&mut fields, "state", &format!("{}{overdue}", state_badge(message.state())));
    definition(&mut fields, "origin", &esc(&e.origin));
    definition(&mut fields, "destination", &esc(&e.destination));
    definition(&mut fields, "case_reference", &esc(&e.case_reference));
    definition(&mut fields, "subject", &esc(&e.subject));
    definition(&mut fields, "body", &format!("<pre class=\"body\">{}</pre>", esc(&e.body)));
    definition(&mut fields, "language", &esc(&e.language));
    definition(&mut fields, "created_at", &time(e.created_at.as_ref()));
    definition(&mut fields, "expires_at", &time(e.expires_at.as_ref()));
    definition(&mut fields, "ack_deadline", &time(message.ack_deadline.as_ref()));
    definition(&mut fields, "received_at", &time(message.received_at.as_ref()));
    definition(
        &mut fields,
        "handling_code",
        e.handling_code().as_str_name().trim_start_matches("HANDLING_CODE_"),
    );
    definition(&mut fields, "handling_restrictions", &esc(&e.handling_restrictions));
    if message.direction() == Direction::Outbound {
        definition(&mut fields, "attempts", &message.attempts.to_string());
        definition(&mut fields, "next_attempt_at", &time(message.next_attempt_at.as_ref()));
        definition(&mut fields, "last_error", &esc(&message.last_error));
    }
    let mut content =
        format!("<section><h2>{}</h2><dl class=\"fields\">{fields}</dl></section>", s.section_fields);

    if let Some(p) = &e.preservation {
        let mut dl = String::new();
        for (name, value) in PRESERVATION_TEXT_FIELDS.iter().zip([
            &p.requesting_authority,
            &p.offence,
            &p.facts,
            &p.data_to_preserve,
            &p.link_to_offence,
            &p.custodian_or_location,
            &p.necessity,
        ]) {
            definition(&mut dl, s.field_label(name), &format!("<span class=\"pre\">{}</span>", esc(value)));
        }
        let yes_no = if p.mutual_legal_assistance_to_follow { s.yes } else { s.no };
        definition(&mut dl, s.field_label("preservation.mutual_legal_assistance_to_follow"), yes_no);
        definition(
            &mut dl,
            s.field_label("preservation.preservation_days"),
            &p.preservation_days.to_string(),
        );
        let _ = write!(
            content,
            "<section><h2>{}</h2><dl class=\"fields\">{dl}</dl></section>",
            s.section_preservation
        );
    }

    if !e.attachments.is_empty() {
        let mut rows = String::new();
        for a in &e.attachments {
            let digest: String = a.sha256.iter().map(|b| format!("{b:02x}")).collect();
            let _ = write!(
                rows,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td><code class=\"digest\">{digest}</code></td></tr>",
                esc(&a.name),
                esc(&a.media_type),
                a.size_bytes
            );
        }
        let _ = write!(
            content,
            "<section><h2>{}</h2><div class=\"table-wrap\"><table><thead><tr><th>name</th><th>media_type</th>\
             <th>size_bytes</th><th>SHA-256</th></tr></thead><tbody>{rows}</tbody></table></div></section>",
            s.section_attachments
        );
    }

    let mut chain = String::new();
    if !e.in_reply_to.is_empty() {
        let _ = write!(
            chain,
            "<p>{} <a href=\"/message/{id}\"><code>{id}</code></a></p>",
            s.answers,
            id = esc(&e.in_reply_to)
        );
    }
    if replies.is_empty() {
        let _ = write!(chain, "<p class=\"empty\">{}</p>", s.no_replies);
    } else {
        chain.push_str("<ul class=\"chain\">");
        for r in replies {
            let Some(re) = r.envelope.as_ref() else { continue };
            let _ = write!(
                chain,
                "<li><a href=\"/message/{id}\">{kind}</a> {origin} → {dest} {state} {created} <span class=\"pre\">{body}</span></li>",
                id = esc(&re.id),
                kind = kind_or_type(re.kind(), re.request_type()),
                origin = esc(&re.origin),
                dest = esc(&re.destination),
                state = state_badge(r.state()),
                created = time(re.created_at.as_ref()),
                body = esc(&re.body),
            );
        }
        chain.push_str("</ul>");
    }
    let _ = write!(content, "<section><h2>{}</h2>{chain}</section>", s.section_chain);

    let mut timeline = String::new();
    for entry in &message.timeline {
        let utc = entry.at.as_ref().map(rfc3339).unwrap_or_default();
        let _ = write!(
            timeline,
            "<tr><td><time datetime=\"{utc}\">{utc}</time></td><td><time datetime=\"{utc}\" data-local-only></time></td>\
             <td>{}</td><td>{}</td></tr>",
            state_badge(entry.state()),
            esc(&entry.note)
        );
    }
    let _ = write!(
        content,
        "<section><h2>{}</h2><div class=\"table-wrap\"><table class=\"timeline\"><thead><tr><th scope=\"col\">{}</th>\
         <th scope=\"col\">{}</th><th scope=\"col\">{}</th><th scope=\"col\">{}</th></tr></thead><tbody>{timeline}</tbody></table></div></section>",
        s.section_timeline, s.time_utc, s.time_local, s.col_state, s.note
    );

    let _ = write!(content, "<section><h2>{}</h2>", s.section_actions);
    if let Some(refusal) = refusal {
        let _ = write!(
            content,
            "<p class=\"refusal\" role=\"alert\"><strong>{}:</strong> {}</p>",
            s.refused,
            esc(refusal)
        );
    }
    content.push_str(&actions(frame, message));
    content.push_str("</section>");
    let title = format!("{} {}", s.message_title, e.subject);
    layout(frame, "message", &title, &content)
}

/// The buttons this viewer's role may use on this message in its state.
fn actions(frame: &Frame<'_>, message: &Message) -> String {
    let s = frame.strings;
    let e = message.envelope.clone().unwrap_or_default();
    let is_request = e.kind() == EnvelopeKind::Request;
    let state = message.state();
    let id = esc(&e.id);
    let token = esc(frame.token);
    let mut out = String::new();
    let inbound_request = is_request && message.direction() == Direction::Inbound;
    let outbound_request = is_request && message.direction() == Direction::Outbound;
    if inbound_request && state == MessageState::Received && frame.may(Action::Acknowledge) {
        let _ = write!(
            out,
            "<form method=\"post\" action=\"/message/{id}/acknowledge\" class=\"action\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{token}\">\
             <label for=\"ack-note\">{label}</label><input id=\"ack-note\" name=\"note\" type=\"text\">\
             <button type=\"submit\" class=\"primary\">{button}</button></form>",
            label = s.acknowledge_note,
            button = s.acknowledge,
        );
    }
    if inbound_request
        && matches!(state, MessageState::Received | MessageState::Acknowledged)
        && frame.may(Action::DisputePrecedence)
    {
        let current = e.precedence();
        let options: String =
            [Precedence::Flash, Precedence::Immediate, Precedence::Priority, Precedence::Routine]
                .into_iter()
                .filter(|p| *p != current)
                .map(|p| {
                    let name = p.as_str_name().trim_start_matches("PRECEDENCE_");
                    format!("<option value=\"{name}\">{name}</option>")
                })
                .collect();
        let _ = write!(
            out,
            "<form method=\"post\" action=\"/message/{id}/dispute\" class=\"action\" data-confirm=\"{confirm}\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{token}\">\
             <label for=\"dispute-precedence\">{l_precedence}</label><select id=\"dispute-precedence\" name=\"precedence\">{options}</select>\
             <label for=\"dispute-reason\">{l_reason}</label><input id=\"dispute-reason\" name=\"reason\" type=\"text\" required>\
             <button type=\"submit\">{button}</button></form>",
            confirm = esc(s.dispute_confirm),
            l_precedence = s.dispute_precedence,
            l_reason = s.dispute_reason,
            button = s.dispute,
        );
    }
    if inbound_request
        && matches!(state, MessageState::Received | MessageState::Acknowledged)
        && frame.may(Action::Respond)
    {
        let _ = write!(
            out,
            "<form method=\"post\" action=\"/message/{id}/respond\" class=\"action\" data-confirm=\"{confirm}\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{token}\">\
             <label for=\"respond-text\">{label}</label><textarea id=\"respond-text\" name=\"text\" rows=\"4\" required></textarea>\
             <button type=\"submit\">{button}</button></form>",
            confirm = esc(s.respond_confirm),
            label = s.respond_text,
            button = s.respond,
        );
    }
    let open = !matches!(state, MessageState::Cancelled | MessageState::Expired | MessageState::Answered);
    if outbound_request && open && frame.may(Action::Cancel) {
        let _ = write!(
            out,
            "<form method=\"post\" action=\"/message/{id}/cancel\" class=\"action\" data-confirm=\"{confirm}\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{token}\">\
             <label for=\"cancel-reason\">{label}</label><input id=\"cancel-reason\" name=\"reason\" type=\"text\" required>\
             <button type=\"submit\" class=\"danger\">{button}</button></form>",
            confirm = esc(s.cancel_confirm),
            label = s.cancel_reason,
            button = s.cancel,
        );
    }
    if message.direction() == Direction::Outbound
        && state == MessageState::Expired
        && frame.may(Action::Requeue)
    {
        let _ = write!(
            out,
            "<form method=\"post\" action=\"/message/{id}/requeue\" class=\"action\" data-confirm=\"{confirm}\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{token}\"><button type=\"submit\">{button}</button></form>",
            confirm = esc(s.requeue_confirm),
            button = s.requeue,
        );
    }
    if out.is_empty() {
        out = format!("<p class=\"empty\">{}</p>", s.no_actions);
    }
    out
}

/// The new-request form, filled with `values`; `errors` are (field, message) pairs shown next to
/// their fields, and those naming no field of the form above it.
pub fn new_request(
    frame: &Frame<'_>,
    destinations: &[(String, String)],
    values: &Form,
    errors: &[(String, String)],
) -> String {
    let s = frame.strings;
    let error_for = |field: &str| -> String {
        errors
            .iter()
            .filter(|(f, _)| f == field)
            .map(|(_, m)| {
                format!(
                    "<p class=\"field-error\" id=\"{}-error\" role=\"alert\">{}</p>",
                    field_id(field),
                    esc(m)
                )
            })
            .collect()
    };
    let described = |field: &str| -> String {
        if errors.iter().any(|(f, _)| f == field) {
            format!(" aria-invalid=\"true\" aria-describedby=\"{}-error\"", field_id(field))
        } else {
            String::new()
        }
    };
    let known: Vec<&str> = field_names();
    let mut content = format!("<p>{}</p>", s.new_intro);
    for (field, message) in errors.iter().filter(|(f, _)| !known.contains(&f.as_str())) {
        let _ = write!(
            content,
            "<p class=\"refusal\" role=\"alert\"><strong>{}:</strong> {}: {}</p>",
            s.refused,
            esc(field),
            esc(message)
        );
    }
    let _ = write!(
        content,
        "<form method=\"post\" action=\"/new\" class=\"request\" novalidate>\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(frame.token)
    );
    let select = |name: &'static str, options: &[(String, String)], selected: &str| -> String {
        let mut html = format!(
            "<div class=\"field\"><label for=\"{id}\">{label} *</label><select id=\"{id}\" name=\"{name}\"{desc}>",
            id = field_id(name),
            label = s.field_label(name),
            desc = described(name),
        );
        for (value, text) in options {
            let sel = if value == selected { " selected" } else { "" };
            let _ = write!(html, "<option value=\"{}\"{sel}>{}</option>", esc(value), esc(text));
        }
        let _ = write!(html, "</select>{}</div>", error_for(name));
        html
    };
    let text = |name: &'static str, required: bool, multiline: bool| -> String {
        let star = if required { " *" } else { "" };
        let value = values.get(name);
        let input = if multiline {
            format!(
                "<textarea id=\"{}\" name=\"{name}\" rows=\"3\"{}>{}</textarea>",
                field_id(name),
                described(name),
                esc(value)
            )
        } else {
            format!(
                "<input id=\"{}\" name=\"{name}\" type=\"text\" value=\"{}\"{}>",
                field_id(name),
                esc(value),
                described(name)
            )
        };
        format!(
            "<div class=\"field\"><label for=\"{}\">{}{star}</label>{input}{}</div>",
            field_id(name),
            s.field_label(name),
            error_for(name)
        )
    };
    let mut blank = vec![(String::new(), "–".to_owned())];
    blank.extend(destinations.iter().cloned());
    content.push_str(&select("destination", &blank, values.get("destination")));
    let types: Vec<(String, String)> = (1..=7)
        .filter_map(|n| RequestType::try_from(n).ok())
        .map(|t| (t.as_str_name().to_owned(), type_name(t).to_owned()))
        .collect();
    let chosen_type = match values.get("request_type") {
        "" => "REQUEST_TYPE_PRESERVATION",
        chosen => chosen,
    };
    content.push_str(&select("request_type", &types, chosen_type));
    let precedences: Vec<(String, String)> = (1..=4)
        .filter_map(|n| Precedence::try_from(n).ok())
        .map(|p| (p.as_str_name().to_owned(), p.as_str_name().trim_start_matches("PRECEDENCE_").to_owned()))
        .collect();
    let chosen_precedence = match values.get("precedence") {
        "" => "PRECEDENCE_ROUTINE",
        chosen => chosen,
    };
    content.push_str(&select("precedence", &precedences, chosen_precedence));
    content.push_str(&text("subject", true, false));
    content.push_str(&text("body", false, true));
    content.push_str(&text("case_reference", false, false));
    content.push_str(&text("in_reply_to", false, false));
    content.push_str(&text("language", false, false));
    let codes: Vec<(String, String)> = (1..=4)
        .filter_map(|n| HandlingCode::try_from(n).ok())
        .map(|h| {
            (h.as_str_name().to_owned(), h.as_str_name().trim_start_matches("HANDLING_CODE_").to_owned())
        })
        .collect();
    let chosen_code = match values.get("handling_code") {
        "" => "HANDLING_CODE_H0",
        chosen => chosen,
    };
    content.push_str(&select("handling_code", &codes, chosen_code));
    content.push_str(&text("handling_restrictions", false, false));

    let _ = write!(
        content,
        "<fieldset class=\"preservation\"><legend>{}</legend><p class=\"hint\">{}</p>{}",
        s.preservation_legend,
        s.preservation_hint,
        error_for("preservation")
    );
    for name in PRESERVATION_TEXT_FIELDS {
        content.push_str(&text(
            name,
            true,
            name != "preservation.requesting_authority" && name != "preservation.offence",
        ));
    }
    let mla = "preservation.mutual_legal_assistance_to_follow";
    let checked = if values.checked(mla) || values.0.is_empty() { " checked" } else { "" };
    let _ = write!(
        content,
        "<div class=\"field check\"><input id=\"{id}\" name=\"{mla}\" type=\"checkbox\" value=\"on\"{checked}{desc}>\
         <label for=\"{id}\">{label}</label>{err}</div>",
        id = field_id(mla),
        desc = described(mla),
        label = s.field_label(mla),
        err = error_for(mla),
    );
    let days = "preservation.preservation_days";
    let days_value = match values.get(days) {
        "" if values.0.is_empty() => "90",
        value => value,
    };
    let _ = write!(
        content,
        "<div class=\"field\"><label for=\"{id}\">{label} *</label><input id=\"{id}\" name=\"{days}\" type=\"number\" min=\"60\" value=\"{value}\"{desc}>{err}</div></fieldset>",
        id = field_id(days),
        label = s.field_label(days),
        value = esc(days_value),
        desc = described(days),
        err = error_for(days),
    );
    let _ = write!(content, "<button type=\"submit\" class=\"primary\">{}</button></form>", s.send);
    layout(frame, "new", s.new_title, &content)
}

/// Every field name of the new-request form.
fn field_names() -> Vec<&'static str> {
    let mut names = vec![
        "destination",
        "request_type",
        "precedence",
        "subject",
        "body",
        "case_reference",
        "in_reply_to",
        "language",
        "handling_code",
        "handling_restrictions",
        "preservation",
        "preservation.mutual_legal_assistance_to_follow",
        "preservation.preservation_days",
    ];
    names.extend(PRESERVATION_TEXT_FIELDS);
    names
}

/// An element id for a field name (`preservation.offence` → `f-preservation-offence`).
pub fn field_id(field: &str) -> String {
    format!("f-{}", field.replace(['.', '[', ']'], "-"))
}

/// The network page: one tile per peer.
pub fn network(
    frame: &Frame<'_>,
    peers: &ListPeersResponse,
    queue: &GetQueueResponse,
    chart: &dyn Fn(&str) -> String,
) -> String {
    let s = frame.strings;
    let mut tiles = String::new();
    for peer in &peers.peers {
        let q = queue.peers.iter().find(|q| q.peer == peer.peer).cloned().unwrap_or_default();
        let depth = q.flash + q.immediate + q.priority + q.routine;
        let connection = peer.connection().as_str_name().trim_start_matches("CONNECTION_STATE_");
        let oldest = if depth > 0 { ticking_age(q.oldest_created_at.as_ref()) } else { "–".into() };
        let contact = match &peer.last_contact_at {
            Some(at) => ticking_age(Some(at)),
            None => s.never.to_owned(),
        };
        let _ = write!(
            tiles,
            "<article class=\"tile conn-{class}\" data-peer=\"{code}\"><h2>{code} <small>{name}</small></h2><dl>\
             <dt>{l_conn}</dt><dd>{connection}</dd>\
             <dt>{l_depth}</dt><dd>{depth} <small>(FLASH {f}, IMMEDIATE {i}, PRIORITY {p}, ROUTINE {r})</small></dd>\
             <dt>{l_oldest}</dt><dd>{oldest}</dd>\
             <dt>{l_contact}</dt><dd>{contact}</dd>\
             <dt>{l_cert}</dt><dd>{cert}</dd>\
             <dt>{l_error}</dt><dd class=\"error\">{error}</dd></dl>\
             <figure><figcaption>{l_chart}</figcaption>{chart}</figure></article>",
            class = connection.to_ascii_lowercase(),
            code = esc(&peer.peer),
            name = esc(&peer.name),
            l_conn = s.connection,
            l_depth = s.queue_depth,
            f = q.flash,
            i = q.immediate,
            p = q.priority,
            r = q.routine,
            l_oldest = s.oldest_waiting,
            l_contact = s.last_contact,
            l_cert = s.certificate_expiry,
            cert = time(peer.certificate_expires_at.as_ref()),
            l_error = s.col_last_error,
            error = esc(if peer.last_error.is_empty() { &q.last_error } else { &peer.last_error }),
            l_chart = s.queue_chart,
            chart = chart(&peer.peer),
        );
    }
    let mut content = format!("<div class=\"tiles\">{tiles}</div>");
    if !peers.warnings.is_empty() {
        let _ = write!(content, "<section><h2>{}</h2><ul>", s.warnings);
        for warning in &peers.warnings {
            let _ = write!(content, "<li>{}</li>", esc(warning));
        }
        content.push_str("</ul></section>");
    }
    layout(frame, "network", s.network_title, &content)
}

/// A refusal page: what the node said, and the way back.
pub fn refusal(frame: &Frame<'_>, message: &str) -> String {
    let s = frame.strings;
    let content = format!(
        "<p class=\"refusal\" role=\"alert\">{}</p><p><a href=\"/inbox\">{}</a></p>",
        esc(message),
        s.back_to_inbox
    );
    layout(frame, "error", s.error_title, &content)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Envelope;

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
    fn escapes_markup() {
        assert_eq!(esc("<a href=\"x\">'&'</a>"), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
    }
}
