//! The new-request form, with the node's refusals next to the fields they name.

use maud::{Markup, html};

use super::{Frame, field_id, layout};
use crate::console::form::{Form, PRESERVATION_TEXT_FIELDS};
use crate::domain::names::ShortName as _;
use crate::proto::{HandlingCode, Precedence, RequestType};

/// The preservation fields that take a name or a short phrase; the others are free text.
const ONE_LINE: [&str; 2] = ["preservation.requesting_authority", "preservation.offence"];

/// The new-request form, filled with `values`; `errors` are (field, message) pairs shown next to
/// their fields, and those naming no field of the form above it.
pub fn new_request(
    frame: &Frame<'_>,
    destinations: &[(String, String)],
    values: &Form,
    errors: &[(String, String)],
) -> String {
    let s = frame.strings;
    let has_error = |field: &str| errors.iter().any(|(f, _)| f == field);
    let error_for = |field: &str| -> Markup {
        html! {
            @for (_, message) in errors.iter().filter(|(f, _)| f == field) {
                p.field-error #(format!("{}-error", field_id(field))) role="alert" { (message) }
            }
        }
    };
    // A field with an error says so to screen readers, and which paragraph explains it.
    let invalid = |field: &str| has_error(field).then_some("true");
    let described_by = |field: &str| has_error(field).then(|| format!("{}-error", field_id(field)));
    let select = |name: &'static str, options: &[(String, String)], selected: &str| -> Markup {
        let id = field_id(name);
        html! {
            div.field {
                label for=(id) { (s.field_label(name)) " *" }
                select #(id) name=(name) aria-invalid=[invalid(name)] aria-describedby=[described_by(name)] {
                    @for (value, text) in options {
                        option value=(value) selected[value == selected] { (text) }
                    }
                }
                (error_for(name))
            }
        }
    };
    let text = |name: &'static str, required: bool, multiline: bool| -> Markup {
        let id = field_id(name);
        let value = values.get(name);
        html! {
            div.field {
                label for=(id) { (s.field_label(name)) @if required { " *" } }
                @if multiline {
                    textarea #(id) name=(name) rows="3"
                        aria-invalid=[invalid(name)] aria-describedby=[described_by(name)] { (value) }
                } @else {
                    input #(id) name=(name) type="text" value=(value)
                        aria-invalid=[invalid(name)] aria-describedby=[described_by(name)];
                }
                (error_for(name))
            }
        }
    };

    let known = field_names();
    let unknown_errors = errors.iter().filter(|(f, _)| !known.contains(&f.as_str()));
    let mut blank = vec![(String::new(), "–".to_owned())];
    blank.extend(destinations.iter().cloned());
    let types: Vec<(String, String)> = (1..=7)
        .filter_map(|n| RequestType::try_from(n).ok())
        .map(|t| (t.as_str_name().to_owned(), t.short_name().to_owned()))
        .collect();
    let precedences: Vec<(String, String)> = (1..=4)
        .filter_map(|n| Precedence::try_from(n).ok())
        .map(|p| (p.as_str_name().to_owned(), p.short_name().to_owned()))
        .collect();
    let codes: Vec<(String, String)> = (1..=4)
        .filter_map(|n| HandlingCode::try_from(n).ok())
        .map(|h| (h.as_str_name().to_owned(), h.short_name().to_owned()))
        .collect();
    let chosen = |name: &str, default: &'static str| match values.get(name) {
        "" => default,
        chosen => chosen,
    };
    let mla = "preservation.mutual_legal_assistance_to_follow";
    let days = "preservation.preservation_days";
    // A fresh form (nothing sent yet) suggests the usual answers.
    let fresh = values.0.is_empty();
    let mla_checked = values.checked(mla) || fresh;
    let days_value = match values.get(days) {
        "" if fresh => "90",
        value => value,
    };

    let content = html! {
        p { (s.new_intro) }
        @for (field, message) in unknown_errors {
            p.refusal role="alert" { strong { (s.refused) ":" } " " (field) ": " (message) }
        }
        form.request method="post" action="/new" enctype="multipart/form-data" novalidate {
            input type="hidden" name="csrf" value=(frame.token);
            (select("destination", &blank, values.get("destination")))
            (select("request_type", &types, chosen("request_type", "REQUEST_TYPE_PRESERVATION")))
            (select("precedence", &precedences, chosen("precedence", "PRECEDENCE_ROUTINE")))
            (text("subject", true, false))
            (text("body", false, true))
            (text("case_reference", false, false))
            (text("in_reply_to", false, false))
            (text("language", false, false))
            (select("handling_code", &codes, chosen("handling_code", "HANDLING_CODE_H0")))
            (text("handling_restrictions", false, false))
            div.field {
                label for=(field_id("attachments")) { (s.field_label("attachments")) }
                input #(field_id("attachments")) name="attachments" type="file" multiple
                    aria-invalid=[invalid("attachments")] aria-describedby=[described_by("attachments")];
                (error_for("attachments"))
            }
            div.field.check {
                input #(field_id("exercise")) name="exercise" type="checkbox" value="on"
                    checked[values.checked("exercise")];
                label for=(field_id("exercise")) { (s.field_label("exercise")) }
            }
            fieldset.preservation {
                legend { (s.preservation_legend) }
                p.hint { (s.preservation_hint) }
                (error_for("preservation"))
                @for name in PRESERVATION_TEXT_FIELDS {
                    (text(name, true, !ONE_LINE.contains(&name)))
                }
                div.field.check {
                    input #(field_id(mla)) name=(mla) type="checkbox" value="on" checked[mla_checked]
                        aria-invalid=[invalid(mla)] aria-describedby=[described_by(mla)];
                    label for=(field_id(mla)) { (s.field_label(mla)) }
                    (error_for(mla))
                }
                div.field {
                    label for=(field_id(days)) { (s.field_label(days)) " *" }
                    input #(field_id(days)) name=(days) type="number" min="60" value=(days_value)
                        aria-invalid=[invalid(days)] aria-describedby=[described_by(days)];
                    (error_for(days))
                }
            }
            button.primary type="submit" { (s.send) }
        }
    };
    layout(frame, "new", s.new_title, &content.into_string())
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
        "attachments",
        "preservation",
        "preservation.mutual_legal_assistance_to_follow",
        "preservation.preservation_days",
    ];
    names.extend(PRESERVATION_TEXT_FIELDS);
    names
}
