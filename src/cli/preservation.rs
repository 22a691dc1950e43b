//! The preservation clock's commands: `cases --expiring` (preservations by the date their data is
//! preserved until), `extend` (an extension request) and `mla-sent` (the note that the mutual
//! legal assistance request was sent), both follow-ups that chain to the preservation.

use std::fmt::Write as _;

use clap::Args;
use serde_json::Value;

use super::{CliError, ClientArgs, IdArgs, connect, print_json, print_message, render};
use crate::domain::follow_up::{FollowUp, FollowUpError};
use crate::domain::names::ShortName as _;
use crate::domain::timestamp::{self, rfc3339};
use crate::proto::{Direction, GetRequest, ListPreservationsRequest, Message};

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

/// Submits the follow-up of the preservation `id` names (`domain::follow_up`, the same request
/// the console's forms make); `flag` is the option that gave the follow-up's field.
async fn follow_up(id: &IdArgs, follow_up: FollowUp, text: String, flag: &str) -> Result<(), CliError> {
    let (mut desk, call) = connect(&id.client)?;
    let got = call.run(desk.get(GetRequest { id: id.id.clone() })).await?.into_inner();
    let message = got.message.unwrap_or_default();
    let mut request =
        crate::domain::follow_up::request(&message, follow_up, text).map_err(|error| match error {
            FollowUpError::NotSentPreservation(_) => {
                CliError::Usage(format!("{} is not a preservation request this node sent", id.id))
            }
            FollowUpError::Invalid(field) => CliError::Usage(format!("{flag}: {}", field.message)),
        })?;
    // One per invocation: the node stores it once even if this call is repeated by a retry.
    request.client_request_id = uuid::Uuid::now_v7().to_string();
    let submitted = call.run(desk.submit(request)).await?.into_inner();
    print_message(&submitted.message.unwrap_or_default(), id.client.json);
    Ok(())
}

/// `hanoi247 extend ID --until DATE`.
pub(super) async fn extend(args: ExtendArgs) -> Result<(), CliError> {
    follow_up(&args.id, FollowUp::Extension(Some(args.until)), args.text, "--until").await
}

/// `hanoi247 mla-sent ID --reference R`.
pub(super) async fn mla_sent(args: MlaSentArgs) -> Result<(), CliError> {
    follow_up(&args.id, FollowUp::MlaSent(args.reference), args.text, "--reference").await
}
