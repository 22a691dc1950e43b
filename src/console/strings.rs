//! Every word the desk console shows a person, in one catalogue per language. English ships; a
//! State adds its language by adding one more `Catalogue` constant and a line in [`catalogue`].
//! Protocol words (FLASH, RECEIVED, PRESERVATION, H2, field names such as
//! `preservation.offence`) are the network's shared vocabulary and are shown as they are.

/// The console's words in one language.
#[derive(Debug)]
pub struct Catalogue {
    /// BCP 47 tag, for `<html lang>`.
    pub lang: &'static str,
    /// The product name in the title bar.
    pub product: &'static str,
    /// Skip link for keyboard users.
    pub skip_to_content: &'static str,
    /// Navigation: inbox.
    pub nav_inbox: &'static str,
    /// Navigation: outbox.
    pub nav_outbox: &'static str,
    /// Navigation: new request.
    pub nav_new: &'static str,
    /// Navigation: network.
    pub nav_network: &'static str,
    /// Navigation: statistics.
    pub nav_statistics: &'static str,
    /// Navigation: the preservation clock.
    pub nav_expiring: &'static str,
    /// Preservations page: title, what it shows, when empty, the "within" filter.
    pub expiring_title: &'static str,
    /// Preservations page: what it shows.
    pub expiring_hint: &'static str,
    /// Preservations page: none.
    pub expiring_none: &'static str,
    /// Preservations page: the "within" filter's label and button.
    pub expiring_within: &'static str,
    /// Preservations page: show button.
    pub expiring_show: &'static str,
    /// Preservations page: column headings (days left, preserved until, direction, peer,
    /// subject, outcome, mutual legal assistance request).
    pub expiring_columns: [&'static str; 7],
    /// "signed in as" before the client name.
    pub signed_in_as: &'static str,
    /// Shown for a certificate that is no client of this node.
    pub no_role: &'static str,
    /// Inbox heading.
    pub inbox_title: &'static str,
    /// Inbox when empty.
    pub inbox_empty: &'static str,
    /// Outbox heading.
    pub outbox_title: &'static str,
    /// Outbox when empty.
    pub outbox_empty: &'static str,
    /// Search form: words of the subject or body.
    pub search_text: &'static str,
    /// Search form: case reference.
    pub search_case: &'static str,
    /// Search form: peer node code.
    pub search_peer: &'static str,
    /// Search form: the button.
    pub search_button: &'static str,
    /// Search form: back to the whole list.
    pub search_clear: &'static str,
    /// Link to the next page of a list.
    pub next_page: &'static str,
    /// Banner when a FLASH request arrives.
    pub flash_banner: &'static str,
    /// The button that asks the browser for permission to show notifications (shown once, until
    /// the officer answers the browser's question).
    pub allow_notifications: &'static str,
    /// Title of the browser notification for a new FLASH or IMMEDIATE request.
    pub attention_title: &'static str,
    /// Its text after the precedence ("FLASH request from VN").
    pub attention_from: &'static str,
    /// Live-update status: connected.
    pub live_on: &'static str,
    /// Live-update status: lost (the browser reconnects by itself).
    pub live_off: &'static str,
    /// Column: precedence.
    pub col_precedence: &'static str,
    /// Column: state.
    pub col_state: &'static str,
    /// Column: from.
    pub col_from: &'static str,
    /// Column: to.
    pub col_to: &'static str,
    /// Column: subject.
    pub col_subject: &'static str,
    /// Column: request type.
    pub col_type: &'static str,
    /// Column: age.
    pub col_age: &'static str,
    /// Column: acknowledgement deadline.
    pub col_deadline: &'static str,
    /// Column: last error.
    pub col_last_error: &'static str,
    /// Column: next retry.
    pub col_next_retry: &'static str,
    /// Column: attempts.
    pub col_attempts: &'static str,
    /// Marks an overdue message.
    pub overdue: &'static str,
    /// Message page heading.
    pub message_title: &'static str,
    /// Section: envelope fields.
    pub section_fields: &'static str,
    /// Section: preservation request.
    pub section_preservation: &'static str,
    /// Section: attachments.
    pub section_attachments: &'static str,
    /// Section: request chain.
    pub section_chain: &'static str,
    /// Section: timeline.
    pub section_timeline: &'static str,
    /// Section: actions.
    pub section_actions: &'static str,
    /// Link to the request this one answers.
    pub answers: &'static str,
    /// No replies yet.
    pub no_replies: &'static str,
    /// Timeline: UTC column.
    pub time_utc: &'static str,
    /// Timeline: the officer's own time zone column.
    pub time_local: &'static str,
    /// Timeline: note column.
    pub note: &'static str,
    /// Button: acknowledge.
    pub acknowledge: &'static str,
    /// Label: acknowledgement note.
    pub acknowledge_note: &'static str,
    /// Button: dispute the precedence.
    pub dispute: &'static str,
    /// Label: the precedence the request deserves.
    pub dispute_precedence: &'static str,
    /// Label: why the precedence is wrong.
    pub dispute_reason: &'static str,
    /// Confirmation before disputing.
    pub dispute_confirm: &'static str,
    /// Button: respond.
    pub respond: &'static str,
    /// Label: response text.
    pub respond_text: &'static str,
    /// Respond form: the handling code of the answer, and its default.
    pub respond_handling: &'static str,
    /// Respond form: the choice that keeps the request's handling code.
    pub respond_handling_default: &'static str,
    /// Respond form: restrictions in words.
    pub respond_restrictions: &'static str,
    /// Confirmation before responding.
    pub respond_confirm: &'static str,
    /// Respond form: the outcome choice that sends text only.
    pub respond_outcome_none: &'static str,
    /// Respond form: which fields each outcome takes.
    pub respond_outcome_hint: &'static str,
    /// Message and print pages: the typed outcome's heading.
    pub section_outcome: &'static str,
    /// Button: cancel the request.
    pub cancel: &'static str,
    /// Label: cancellation reason.
    pub cancel_reason: &'static str,
    /// Confirmation before cancelling.
    pub cancel_confirm: &'static str,
    /// Button: requeue.
    pub requeue: &'static str,
    /// Confirmation before requeueing.
    pub requeue_confirm: &'static str,
    /// Button: close the case.
    pub close_case: &'static str,
    /// Label: why the case is closed.
    pub close_reason: &'static str,
    /// Confirmation before closing a case.
    pub close_confirm: &'static str,
    /// Badge of a closed case.
    pub closed: &'static str,
    /// Message page of a preservation this node sent: what its follow-ups are for.
    pub follow_up_hint: &'static str,
    /// Button: ask for an extension of the preservation.
    pub extend: &'static str,
    /// Label: the new date the data should be preserved until.
    pub extend_until: &'static str,
    /// Confirmation before asking for an extension.
    pub extend_confirm: &'static str,
    /// Button: record that the mutual legal assistance request was sent.
    pub mla_sent: &'static str,
    /// Label: the mutual legal assistance request's reference.
    pub mla_reference: &'static str,
    /// Confirmation before telling the other State the MLA request was sent.
    pub mla_sent_confirm: &'static str,
    /// Label: free text sent with a follow-up.
    pub follow_up_text: &'static str,
    /// What a removed content field shows.
    pub content_removed: &'static str,
    /// When the role may do nothing with this message.
    pub no_actions: &'static str,
    /// New request heading.
    pub new_title: &'static str,
    /// Intro under the new request heading.
    pub new_intro: &'static str,
    /// Submit button of the new request form.
    pub send: &'static str,
    /// Heading above a refusal that names no form field.
    pub refused: &'static str,
    /// The form's preservation fieldset legend.
    pub preservation_legend: &'static str,
    /// Hint on the preservation fieldset.
    pub preservation_hint: &'static str,
    /// Labels of the new request form, by field name as in the proto.
    pub field_labels: &'static [(&'static str, &'static str)],
    /// Network page heading.
    pub network_title: &'static str,
    /// Network page: queue depth.
    pub queue_depth: &'static str,
    /// Network page: the chart of the queue depth.
    pub queue_chart: &'static str,
    /// Network page: oldest waiting message.
    pub oldest_waiting: &'static str,
    /// Network page: last contact.
    pub last_contact: &'static str,
    /// Network page: peer certificate expiry.
    pub certificate_expiry: &'static str,
    /// Network page: connection.
    pub connection: &'static str,
    /// The badge of an exercise (a drill), everywhere it is shown.
    pub exercise: &'static str,
    /// Message page: an exercise's banner.
    pub exercise_banner: &'static str,
    /// Statistics page: exercises left out.
    pub statistics_exercises: &'static str,
    /// Message page: the link to the case's printable view.
    pub printable_view: &'static str,
    /// Print view: heading before the case reference.
    pub case_title: &'static str,
    /// Print view: who printed it and when.
    pub printed: &'static str,
    /// Print view: how to print it.
    pub print_hint: &'static str,
    /// Print view: heading of the proof fingerprints.
    pub section_proofs: &'static str,
    /// Print view: how a reader checks the fingerprints.
    pub proofs_hint: &'static str,
    /// Print view: column headings of the proofs (envelope, envelope SHA-256, signed by,
    /// receipt).
    pub proof_columns: [&'static str; 4],
    /// Print view: a message without a signature (stored before envelopes were signed).
    pub no_proof: &'static str,
    /// Print view: no receipt yet.
    pub no_receipt: &'static str,
    /// Statistics page heading.
    pub statistics_title: &'static str,
    /// Statistics page: what it counts, and what it never shows.
    pub statistics_hint: &'static str,
    /// Statistics page: the period's first day.
    pub statistics_from: &'static str,
    /// Statistics page: the day after the period.
    pub statistics_to: &'static str,
    /// Statistics page: the button.
    pub statistics_show: &'static str,
    /// Statistics page: heading of the counts.
    pub statistics_counts: &'static str,
    /// Statistics page: heading of the times.
    pub statistics_times: &'static str,
    /// Statistics page: no request in the period.
    pub statistics_none: &'static str,
    /// Statistics page: column headings of the counts (direction, type, precedence, peer, state,
    /// count).
    pub statistics_count_columns: [&'static str; 7],
    /// Statistics page: column headings of the times (what, count, median, 90th percentile).
    pub statistics_time_columns: [&'static str; 4],
    /// Who to call: the peer's human phone fallback.
    pub phone: &'static str,
    /// Who to call: the peer's local time now.
    pub local_time: &'static str,
    /// Who to call: the peer's working languages.
    pub working_languages: &'static str,
    /// Message page: heading of the peer's contact details.
    pub who_to_call: &'static str,
    /// Who to call: nothing listed in the directory.
    pub not_listed: &'static str,
    /// Message page: the request's language is not one the peer lists.
    pub language_not_listed: &'static str,
    /// Network page: nothing known yet.
    pub never: &'static str,
    /// Network page: certificate warnings heading.
    pub warnings: &'static str,
    /// A refusal because the form token is missing or wrong.
    pub csrf_refused: &'static str,
    /// Heading of a refusal page.
    pub error_title: &'static str,
    /// Link back to the inbox from an error page.
    pub back_to_inbox: &'static str,
    /// Yes.
    pub yes: &'static str,
    /// No.
    pub no: &'static str,
}

impl Catalogue {
    /// The label of form field `name` (the name itself when the catalogue has none).
    pub fn field_label(&self, name: &'static str) -> &'static str {
        self.field_labels.iter().find(|(field, _)| *field == name).map_or(name, |(_, label)| label)
    }
}

/// English.
pub const ENGLISH: Catalogue = Catalogue {
    lang: "en",
    product: "hanoi247 desk console",
    skip_to_content: "Skip to content",
    nav_inbox: "Inbox",
    nav_outbox: "Outbox",
    nav_new: "New request",
    nav_network: "Network",
    nav_statistics: "Statistics",
    nav_expiring: "Preservations",
    expiring_title: "Preservations by days left",
    expiring_hint: "Preservations sent and received, the soonest to lapse first: file the mutual legal assistance request or ask for an extension before the date.",
    expiring_none: "No preservation with a date in this period.",
    expiring_within: "Lapsing within (e.g. 14d; empty: all)",
    expiring_show: "Show",
    expiring_columns: [
        "Days left",
        "Preserved until",
        "Direction",
        "Peer",
        "Subject",
        "Outcome",
        "MLA request sent",
    ],
    signed_in_as: "Signed in as",
    no_role: "no role on this node",
    inbox_title: "Inbox",
    inbox_empty: "Nothing has come in.",
    outbox_title: "Outbox",
    outbox_empty: "Nothing sent.",
    search_text: "Subject or body",
    search_case: "Case reference",
    search_peer: "Peer",
    search_button: "Search",
    search_clear: "Show all",
    next_page: "Next page →",
    flash_banner: "FLASH request received: act now.",
    allow_notifications: "Allow notifications",
    attention_title: "New request at the desk",
    attention_from: "request from",
    live_on: "live",
    live_off: "reconnecting…",
    col_precedence: "Precedence",
    col_state: "State",
    col_from: "From",
    col_to: "To",
    col_subject: "Subject",
    col_type: "Type",
    col_age: "Age",
    col_deadline: "Acknowledge by",
    col_last_error: "Last error",
    col_next_retry: "Next retry",
    col_attempts: "Attempts",
    overdue: "OVERDUE",
    message_title: "Message",
    section_fields: "Envelope",
    section_preservation: "Preservation request",
    section_attachments: "Attachments",
    section_chain: "Request chain",
    section_timeline: "Timeline",
    section_actions: "Actions",
    answers: "Answers",
    no_replies: "No replies yet.",
    time_utc: "Time (UTC)",
    time_local: "Your time",
    note: "Note",
    acknowledge: "Acknowledge",
    acknowledge_note: "Note to the sender (optional)",
    dispute: "Dispute precedence",
    dispute_precedence: "Precedence it deserves",
    dispute_reason: "Why (the sender sees this)",
    dispute_confirm: "Tell the sender you dispute this request's precedence? It cannot be withdrawn.",
    respond: "Send response",
    respond_text: "Response",
    respond_handling: "Handling of this answer",
    respond_handling_default: "as the request",
    respond_restrictions: "Restrictions (required for H3)",
    respond_confirm: "Send this response? It cannot be withdrawn.",
    respond_outcome_none: "none (text only)",
    respond_outcome_hint: "Executed preservation: preserved until (at least 60 days after the request). Refused: grounds. Forwarded: the authority. More information needed keeps the case open.",
    section_outcome: "Outcome",
    cancel: "Cancel request",
    cancel_reason: "Why the request is withdrawn",
    cancel_confirm: "Cancel this request? The other side is told and it cannot be undone.",
    requeue: "Requeue",
    requeue_confirm: "Send this expired request again, with a new expiry?",
    close_case: "Close case",
    close_reason: "Why the case is closed (optional)",
    close_confirm: "Close this case? Its content (texts, subjects) is removed from this node once the retention period is over.",
    closed: "CLOSED",
    follow_up_hint: "Before the data lapses: ask the other State for an extension, or tell it the mutual legal assistance request was sent (the data is then kept until it is answered).",
    extend: "Ask for an extension",
    extend_until: "Preserve until (a later date than now)",
    extend_confirm: "Ask the other State to keep the data until this date?",
    mla_sent: "MLA request sent",
    mla_reference: "Reference of the mutual legal assistance request",
    mla_sent_confirm: "Tell the other State the mutual legal assistance request was sent, under this reference?",
    follow_up_text: "Note for the other desk (optional)",
    content_removed: "Content removed (retention of closed cases)",
    no_actions: "Your role has nothing to do with this message.",
    new_title: "New request",
    new_intro: "Fields marked * are required. The node checks the request before anything is stored.",
    send: "Send request",
    refused: "The node refused this",
    preservation_legend: "Preservation request (required for PRESERVATION)",
    preservation_hint: "Each field of the Convention's preservation request; at least 60 days.",
    field_labels: &[
        ("destination", "To"),
        ("request_type", "Request type"),
        ("precedence", "Precedence"),
        ("subject", "Subject"),
        ("body", "Body"),
        ("case_reference", "Case reference (empty: a new one)"),
        ("language", "Language (BCP 47)"),
        ("handling_code", "Handling code"),
        ("handling_restrictions", "Handling restrictions (required for H3)"),
        ("in_reply_to", "In reply to (message id)"),
        ("preservation.requesting_authority", "Requesting authority"),
        ("preservation.offence", "Offence"),
        ("preservation.facts", "Short facts"),
        ("preservation.data_to_preserve", "Stored data to preserve"),
        ("preservation.link_to_offence", "Link of the data to the offence"),
        ("preservation.custodian_or_location", "Custodian or location of the data"),
        ("preservation.necessity", "Why preservation is needed"),
        ("preservation.mutual_legal_assistance_to_follow", "A mutual legal assistance request will follow"),
        ("preservation.preservation_days", "Preservation period (days)"),
        ("exercise", "Exercise (a drill, not a real request)"),
        ("attachments", "Attachments (files: evidence, logs, records)"),
        ("outcome.kind", "Outcome"),
        ("outcome.preserved_until", "Preserved until"),
        ("outcome.reference", "Provider's or authority's reference"),
        ("outcome.refusal_grounds", "Grounds (required to refuse)"),
        ("outcome.forwarded_to", "Forwarded to (authority)"),
        ("outcome.traffic_data.provider_or_path", "Traffic data: provider or path identified"),
        ("outcome.traffic_data.third_state", "Traffic data: third State (e.g. DE)"),
        ("outcome.traffic_data.preservation_id", "Traffic data: the preservation"),
        ("follow_up.mla_reference", "Mutual legal assistance request sent"),
        ("follow_up.extend_until", "Extension asked until"),
    ],
    network_title: "Network",
    queue_depth: "Queue",
    queue_chart: "Queue depth over the last hour",
    oldest_waiting: "Oldest waiting",
    last_contact: "Last contact",
    certificate_expiry: "Certificate expires",
    connection: "Connection",
    exercise: "EXERCISE",
    exercise_banner: "EXERCISE: a drill, not a real request.",
    statistics_exercises: "Exercise requests not counted:",
    printable_view: "Printable view of the case",
    case_title: "Case",
    printed: "Printed",
    print_hint: "Print with the browser (Ctrl+P or ⌘P): navigation and buttons are left out.",
    section_proofs: "Signatures and receipts",
    proofs_hint: "Each envelope's SHA-256 is what its origin signed and its receiver receipted; \"hanoi247 show ID --proof FILE\" writes the proof and \"hanoi247 verify FILE\" checks it offline.",
    proof_columns: ["Envelope", "Envelope SHA-256", "Signed by (certificate SHA-256)", "Receipt"],
    no_proof: "no signature (stored before envelopes were signed)",
    no_receipt: "no receipt yet",
    statistics_title: "Statistics",
    statistics_hint: "Requests created in the period, sent and received: counts and times only, never content.",
    statistics_from: "From (date)",
    statistics_to: "Before (date)",
    statistics_show: "Show",
    statistics_counts: "Requests",
    statistics_times: "Time from creation",
    statistics_none: "No request was created in this period.",
    statistics_count_columns: ["Direction", "Type", "Precedence", "Peer", "State", "Outcome", "Count"],
    statistics_time_columns: ["Measure", "Requests", "Median", "90th percentile"],
    phone: "Phone",
    local_time: "Local time",
    working_languages: "Working languages",
    who_to_call: "Who to call",
    not_listed: "not listed",
    language_not_listed: "This request's language is not among the peer's working languages: a translation may be asked for.",
    never: "never",
    warnings: "Warnings",
    csrf_refused: "The form token is missing or out of date (was the node restarted?): reload the page and try again.",
    error_title: "Refused",
    back_to_inbox: "Back to the inbox",
    yes: "yes",
    no: "no",
};

/// The catalogues shipped; a State adds its own here, e.g. `&FRENCH`.
static SHIPPED: &[&Catalogue] = &[&ENGLISH];

/// The catalogue for the first language of an `Accept-Language` header that has one; English
/// otherwise.
pub fn catalogue(accept_language: &str) -> &'static Catalogue {
    accept_language
        .split(',')
        .filter_map(|item| item.split(';').next())
        .map(|tag| tag.trim().split('-').next().unwrap_or_default().to_ascii_lowercase())
        .find_map(|primary| SHIPPED.iter().copied().find(|c| c.lang == primary))
        .unwrap_or(&ENGLISH)
}
