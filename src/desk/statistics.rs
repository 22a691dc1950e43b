//! The network's reporting (`GetStatistics`): the requests sent and received in a period,
//! counted by direction, type, precedence, peer and state, with the median and 90th percentile
//! of the time from creation to receipt, to acknowledgement and to answer.
//!
//! Counts and times only: nothing here reads a subject, a body, a note or a case reference, so
//! the figures can go to a secretariat or a conference of the States parties as they are. A
//! request's period is its creation time; the whole inbox and outbox are visited one message at
//! a time (the store keeps what retention keeps), off the async workers.

use std::collections::BTreeMap;
use std::time::SystemTime;

use prost_types::Timestamp;

use super::{Desk, DeskError};
use crate::domain::access::{Action, Caller};
use crate::domain::timestamp;
use crate::domain::validation::{FieldError, check_timestamp};
use crate::proto::{
    Direction, EnvelopeKind, GetStatisticsRequest, GetStatisticsResponse, Message, MessageState,
    StatisticsRow, StatisticsTimes, TimeMeasure,
};
use crate::store::{Listing, StoreError, peer_of};

impl Desk {
    /// The figures of the requests created in the period `request` names (see the module
    /// documentation). The read is recorded in the audit log with the period.
    pub async fn statistics(
        &self,
        caller: &Caller,
        request: GetStatisticsRequest,
    ) -> Result<GetStatisticsResponse, DeskError> {
        let period = Period::of(&request, self.context.clock.now())?;
        let figures = self
            .off_the_workers(move |context| {
                let mut tally = Tally::new(period);
                for listing in [Listing::Outbox, Listing::Inbox] {
                    context.store.visit(listing, |stored| {
                        if let Some(message) = &stored.message {
                            tally.add(message);
                        }
                    })?;
                }
                Ok::<_, StoreError>(tally.finish())
            })
            .await?;
        let details = format!(
            "requests created {} to {}",
            figures.from.as_ref().map_or_else(|| "the first".to_owned(), timestamp::rfc3339),
            figures.to.as_ref().map(timestamp::rfc3339).unwrap_or_default()
        );
        self.audit_read(caller, Action::GetStatistics, "", &details).await?;
        Ok(figures)
    }
}

/// The period counted: requests created at or after `from` and before `to`.
#[derive(Debug, Clone, Copy)]
struct Period {
    from: Option<SystemTime>,
    to: SystemTime,
}

impl Period {
    /// The request's period, `to` defaulting to `now`; refused naming the field when a time is
    /// out of range or `to` is not after `from`.
    fn of(request: &GetStatisticsRequest, now: SystemTime) -> Result<Self, FieldError> {
        if let Some(from) = &request.from {
            check_timestamp("from", from)?;
        }
        if let Some(to) = &request.to {
            check_timestamp("to", to)?;
        }
        let from = request.from.as_ref().map(timestamp::to_system);
        let to = request.to.as_ref().map_or(now, timestamp::to_system);
        if from.is_some_and(|from| to <= from) {
            return Err(FieldError::new("to", "must be after `from`"));
        }
        Ok(Self { from, to })
    }

    fn holds(&self, at: SystemTime) -> bool {
        self.from.is_none_or(|from| at >= from) && at < self.to
    }
}

/// A row's key: direction, request type, precedence, peer, state, outcome kind.
type RowKey = (i32, i32, i32, String, i32, i32);

/// The figures, gathered one request at a time.
struct Tally {
    period: Period,
    rows: BTreeMap<RowKey, u64>,
    /// Exercises in the period, left out of the figures.
    exercises: u64,
    /// Seconds from creation, per (direction, measure).
    times: BTreeMap<(i32, i32), Vec<f64>>,
}

impl Tally {
    fn new(period: Period) -> Self {
        Self { period, rows: BTreeMap::new(), exercises: 0, times: BTreeMap::new() }
    }

    /// Counts `message` if it is a request created in the period.
    fn add(&mut self, message: &Message) {
        let Some(envelope) = &message.envelope else { return };
        let Some(created) = envelope.created_at.as_ref().map(timestamp::to_system) else { return };
        if envelope.kind() != EnvelopeKind::Request || !self.period.holds(created) {
            return;
        }
        if envelope.exercise {
            self.exercises += 1;
            return;
        }
        let key = (
            message.direction,
            envelope.request_type,
            envelope.precedence,
            peer_of(message).to_owned(),
            message.state,
            message.outcome.as_ref().map_or(0, |o| o.kind),
        );
        *self.rows.entry(key).or_default() += 1;
        let first_entered = |state: MessageState| {
            message.timeline.iter().find(|entry| entry.state() == state).and_then(|entry| entry.at.as_ref())
        };
        let measured = [
            (TimeMeasure::Receipt, message.received_at.as_ref()),
            (TimeMeasure::Acknowledgement, first_entered(MessageState::Acknowledged)),
            (TimeMeasure::Answer, first_entered(MessageState::Answered)),
        ];
        for (measure, at) in measured {
            if let Some(at) = at {
                // A peer's clock may run behind ours: a time before creation counts as none.
                let seconds =
                    timestamp::to_system(at).duration_since(created).unwrap_or_default().as_secs_f64();
                self.times.entry((message.direction, measure as i32)).or_default().push(seconds);
            }
        }
    }

    /// The response: rows most first, then times by direction and measure.
    fn finish(self) -> GetStatisticsResponse {
        let mut rows: Vec<StatisticsRow> = self
            .rows
            .into_iter()
            .map(|((direction, request_type, precedence, peer, state, outcome), count)| StatisticsRow {
                direction,
                request_type,
                precedence,
                peer,
                state,
                count,
                outcome,
            })
            .collect();
        rows.sort_by_key(|row| std::cmp::Reverse(row.count));
        let times = self
            .times
            .into_iter()
            .map(|((direction, measure), mut seconds)| {
                seconds.sort_by(f64::total_cmp);
                StatisticsTimes {
                    direction,
                    measure,
                    count: seconds.len() as u64,
                    p50_seconds: nearest_rank(&seconds, 0.5),
                    p90_seconds: nearest_rank(&seconds, 0.9),
                }
            })
            .collect();
        GetStatisticsResponse {
            from: self.period.from.map(timestamp::from_system),
            to: Some(timestamp::from_system(self.period.to)),
            rows,
            times,
            exercises_excluded: self.exercises,
        }
    }
}

/// The `p` quantile of sorted values by nearest rank (the value at rank ⌈p·n⌉); 0 when empty.
fn nearest_rank(sorted: &[f64], p: f64) -> f64 {
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.saturating_sub(1)).copied().unwrap_or_default()
}

/// The figures' direction in words, for the CLI and the console.
pub fn direction_word(direction: Direction) -> &'static str {
    match direction {
        Direction::Outbound => "sent",
        Direction::Inbound => "received",
        Direction::Unspecified => "-",
    }
}

/// A measure in words ("to receipt").
pub fn measure_words(measure: TimeMeasure) -> &'static str {
    match measure {
        TimeMeasure::Receipt => "to receipt",
        TimeMeasure::Acknowledgement => "to acknowledgement",
        TimeMeasure::Answer => "to answer",
        TimeMeasure::Unspecified => "-",
    }
}

/// Seconds as a person reads them: "340 ms" below a second, else "1m 30s" (whole seconds).
pub fn seconds_words(seconds: f64) -> String {
    if seconds < 1.0 {
        return format!("{} ms", (seconds * 1000.0).round());
    }
    humantime::format_duration(std::time::Duration::from_secs(seconds.round() as u64)).to_string()
}

/// A `Timestamp` for a period bound given as an RFC 3339 time or a date (midnight UTC).
pub fn period_bound(text: &str) -> Result<Timestamp, String> {
    let text = text.trim();
    let full = if text.len() == 10 { format!("{text}T00:00:00Z") } else { text.to_owned() };
    humantime::parse_rfc3339_weak(&full)
        .map(timestamp::from_system)
        .map_err(|e| format!("'{text}' is not a date (2026-11-01) or an RFC 3339 time: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Envelope, Precedence, RequestType, TimelineEntry};
    use std::time::Duration;

    fn at(seconds: u64) -> Timestamp {
        timestamp::from_system(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + seconds))
    }

    fn request(
        direction: Direction,
        created: u64,
        acknowledged: Option<u64>,
        answered: Option<u64>,
    ) -> Message {
        let mut timeline = Vec::new();
        for (state, time) in [(MessageState::Acknowledged, acknowledged), (MessageState::Answered, answered)]
        {
            if let Some(time) = time {
                timeline.push(TimelineEntry { at: Some(at(time)), state: state as i32, note: String::new() });
            }
        }
        Message {
            envelope: Some(Envelope {
                kind: EnvelopeKind::Request as i32,
                request_type: RequestType::Preservation as i32,
                precedence: Precedence::Flash as i32,
                origin: "VN".into(),
                destination: "FR".into(),
                subject: "never read".into(),
                created_at: Some(at(created)),
                ..Default::default()
            }),
            direction: direction as i32,
            state: if answered.is_some() { MessageState::Answered } else { MessageState::Delivered } as i32,
            received_at: Some(at(created + 1)),
            timeline,
            ..Default::default()
        }
    }

    #[test]
    fn counts_and_times_of_requests_created_in_the_period() {
        let period =
            Period { from: Some(timestamp::to_system(&at(0))), to: timestamp::to_system(&at(1_000)) };
        let mut tally = Tally::new(period);
        for (created, ack, answer) in [(0, Some(10), Some(100)), (5, Some(25), None), (9, None, None)] {
            tally.add(&request(Direction::Outbound, created, ack, answer));
        }
        tally.add(&request(Direction::Outbound, 1_000, Some(1_001), None)); // after the period
        let mut reply = request(Direction::Outbound, 20, None, None);
        reply.envelope.as_mut().unwrap().kind = EnvelopeKind::Response as i32; // not a request
        tally.add(&reply);
        let figures = tally.finish();
        let counted: u64 = figures.rows.iter().map(|r| r.count).sum();
        assert_eq!(counted, 3);
        assert_eq!(figures.rows[0].count, 2, "most first: two DELIVERED, one ANSWERED");
        assert_eq!(figures.rows[0].peer, "FR");
        let time = |measure: TimeMeasure| *figures.times.iter().find(|t| t.measure() == measure).unwrap();
        assert_eq!((time(TimeMeasure::Receipt).count, time(TimeMeasure::Receipt).p90_seconds), (3, 1.0));
        let ack = time(TimeMeasure::Acknowledgement);
        assert_eq!((ack.count, ack.p50_seconds, ack.p90_seconds), (2, 10.0, 20.0));
        assert_eq!(time(TimeMeasure::Answer).p50_seconds, 100.0);
    }

    #[test]
    fn a_period_that_ends_before_it_starts_is_refused_naming_to() {
        let request = GetStatisticsRequest { from: Some(at(10)), to: Some(at(10)) };
        assert_eq!(Period::of(&request, SystemTime::now()).unwrap_err().field, "to");
        let bad = GetStatisticsRequest { from: Some(Timestamp { seconds: i64::MAX, nanos: 0 }), to: None };
        assert_eq!(Period::of(&bad, SystemTime::now()).unwrap_err().field, "from");
    }

    #[test]
    fn nearest_rank_quantiles() {
        let values: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(nearest_rank(&values, 0.5), 5.0);
        assert_eq!(nearest_rank(&values, 0.9), 9.0);
        assert_eq!(nearest_rank(&[], 0.9), 0.0);
        assert_eq!(period_bound("2026-11-01").unwrap().seconds, 1_793_491_200);
        assert_eq!((seconds_words(0.3404), seconds_words(90.4)), ("340 ms".to_owned(), "1m 30s".to_owned()));
        assert!(period_bound("yesterday").unwrap_err().contains("not a date"));
    }
}
