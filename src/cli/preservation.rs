//! The preservation clock's commands: `cases --expiring` (preservations by the date their data is
//! preserved until), `extend` (an extension request) and `mla-sent` (the note that the mutual
//! legal assistance request was sent), both follow-ups that chain to the preservation.

use std::fmt::Write as _;

use clap::Args;
use serde_json::Value;

use super::{CliError, ClientArgs, IdArgs, connect, print_json, print_message, render};
use crate::domain::names::ShortName as _;
use crate::domain::timestamp::{self, rfc3339};
use crate::proto::{
    Direction, GetRequest, ListPreservationsRequest, Message, PreservationFollowUp, RequestType,
    SubmitRequest,
};

/// `cases` options.
#[derive(Debug, Args)]
pub struct CasesArgs {
    /// Client options.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Only preservations that lapse within this long, e.g. 14d (all when not given).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub expiring: Option<std::time::Duration>,
}

/// `extend` options.
#[derive(Debug, Args)]
pub struct ExtendArgs {
    /// The preservation (or a follow-up of it) and client options.
    #[command(flatten)]
    pub id: IdArgs,
    /// The new date asked: a date (the end of that day, UTC) or an RFC 3339 time.
    #[arg(long, value_parser = super::preserved_until_arg)]
    pub until: prost_types::Timestamp,
    /// Free text for the other desk.
    #[arg(long, default_value = "")]
    pub text: String,
}

/// `mla-sent` options.
#[derive(Debug, Args)]
pub struct MlaSentArgs {
    /// The preservation (or a follow-up of it) and client options.
    #[command(flatten)]
    pub id: IdArgs,
    /// The mutual legal assistance request's reference.
    #[arg(long)]
    pub reference: String,
    /// Free text for the other desk.
    #[arg(long, default_value = "")]
    pub text: String,
}

/// Whole days from now until `until` (negative once it lapsed), rounded down.
fn days_left(until: &prost_types::Timestamp) -> i64 {
    let now = timestamp::now();
    (until.seconds - now.seconds).div_euclid(86_400)
}

/// `hanoi247 cases [--expiring 14d]`: a table, or JSON with `days_left` on each message.
pub(super) async fn cases(args: CasesArgs) -> Result<(), CliError> {
    let (mut desk, call) = connect(&args.client)?;
    let within = args.expiring.map(|d| prost_types::Duration::try_from(d).unwrap_or_default());
    let request = ListPreservationsRequest { within };
    let messages = call.run(desk.list_preservations(request)).await?.into_inner().messages;
    if args.client.json {
        let cases: Vec<Value> = messages
            .iter()
            .map(|m| {
                let mut value = render::message_json(m);
                value["days_left"] = m.preserved_until.as_ref().map(days_left).into();
                value
            })
            .collect();
        print_json(&Value::Array(cases));
    } else {
        print!("{}", cases_table(&messages));
    }
    Ok(())
}

/// One line per preservation: days left, date, peer, outcome, MLA reference, subject.
fn cases_table(messages: &[Message]) -> String {
    let mut out = format!(
        "{:<36}  {:>9}  {:<24}  {:<4} {:<16} {:<16} SUBJECT\n",
        "ID", "DAYS LEFT", "PRESERVED UNTIL", "PEER", "OUTCOME", "MLA SENT"
    );
    for m in messages {
        let e = m.envelope.clone().unwrap_or_default();
        let peer = if m.direction() == Direction::Inbound { &e.origin } else { &e.destination };
        let until = m.preserved_until.unwrap_or_default();
        let _ = writeln!(
            out,
            "{:<36}  {:>9}  {:<24}  {:<4} {:<16} {:<16} {}",
            e.id,
            days_left(&until),
            rfc3339(&until),
            crate::domain::text::printable(peer, false),
            m.outcome.as_ref().map(|o| o.kind().short_name()).unwrap_or(""),
            crate::domain::text::printable(&m.mla_reference, false),
            crate::domain::text::printable(&e.subject, false),
        );
    }
    if messages.is_empty() {
        out.push_str("(no preservations)\n");
    }
    out
}

/// Submits a follow-up of the preservation `id` names (to its destination, same precedence).
async fn follow_up(
    id: &IdArgs,
    follow_up: PreservationFollowUp,
    subject: String,
    body: String,
) -> Result<(), CliError> {
    let (mut desk, call) = connect(&id.client)?;
    let got = call.run(desk.get(GetRequest { id: id.id.clone() })).await?.into_inner();
    let message = got.message.unwrap_or_default();
    let envelope = message.envelope.unwrap_or_default();
    if message.direction != Direction::Outbound as i32 || envelope.request_type() != RequestType::Preservation
    {
        return Err(CliError::Usage(format!("{} is not a preservation request this node sent", id.id)));
    }
    let request = SubmitRequest {
        destination: envelope.destination,
        request_type: RequestType::Preservation as i32,
        precedence: envelope.precedence,
        subject,
        body,
        language: envelope.language,
        in_reply_to: envelope.id,
        handling_code: envelope.handling_code,
        handling_restrictions: envelope.handling_restrictions,
        // One per invocation: the node stores it once even if this call is repeated by a retry.
        client_request_id: uuid::Uuid::now_v7().to_string(),
        follow_up: Some(follow_up),
        ..Default::default()
    };
    let submitted = call.run(desk.submit(request)).await?.into_inner();
    print_message(&submitted.message.unwrap_or_default(), id.client.json);
    Ok(())
}

/// `hanoi247 extend ID --until DATE`.
pub(super) async fn extend(args: ExtendArgs) -> Result<(), CliError> {
    let subject = format!("Extension of the preservation until {}", rfc3339(&args.until));
    let asked = PreservationFollowUp { extend_until: Some(args.until), ..Default::default() };
    follow_up(&args.id, asked, subject, args.text).await
}

/// `hanoi247 mla-sent ID --reference R`.
pub(super) async fn mla_sent(args: MlaSentArgs) -> Result<(), CliError> {
    let subject = format!("Mutual legal assistance request sent: {}", args.reference);
    let sent = PreservationFollowUp { mla_reference: args.reference, ..Default::default() };
    follow_up(&args.id, sent, subject, args.text).await
}
