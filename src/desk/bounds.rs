//! What one desk client may cost the node: its call rate (a token bucket per client), its open
//! streams (`Watch` and the console's event stream), and the audit records its repeated calls
//! write (one record per series and interval, then one record with the count).
//!
//! All of it lives in memory and starts empty at each start: these are bounds, not records.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::domain::validation::Limits;

/// Above this many clients tracked, buckets that are full again (idle clients) are forgotten.
const TRACKED_CLIENTS: usize = 1024;

/// The call rate of each desk client: `rate` calls per second on average, `burst` at once.
pub(super) struct CallRate {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl CallRate {
    pub(super) fn new(limits: &Limits) -> Self {
        Self {
            rate: f64::from(limits.desk_calls_per_second),
            burst: f64::from(limits.desk_call_burst),
            buckets: Mutex::default(),
        }
    }

    /// Takes one call from `client`'s bucket, or says how long until the next one may be made.
    pub(super) fn take(&self, client: &str, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() > TRACKED_CLIENTS {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.saturating_duration_since(*at).as_secs_f64() * rate < burst
            });
        }
        let (tokens, at) = buckets.entry(client.to_owned()).or_insert((self.burst, now));
        *tokens = (*tokens + now.saturating_duration_since(*at).as_secs_f64() * self.rate).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / self.rate))
        }
    }
}

/// The streams each desk client has open.
pub(super) struct StreamCount {
    cap: usize,
    open: Arc<Mutex<HashMap<String, usize>>>,
}

/// One open stream of a client; dropping it (the stream ends) gives its place back.
pub struct StreamSlot {
    client: String,
    open: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.client);
            }
        }
    }
}

impl StreamCount {
    pub(super) fn new(limits: &Limits) -> Self {
        Self { cap: limits.max_streams_per_client, open: Arc::default() }
    }

    /// A place for one more stream of `client`, or `None` when it has `cap` open.
    pub(super) fn open(&self, client: &str) -> Option<StreamSlot> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(client.to_owned()).or_insert(0);
        if *count >= self.cap {
            return None;
        }
        *count += 1;
        Some(StreamSlot { client: client.to_owned(), open: Arc::clone(&self.open) })
    }

    /// The cap (for refusal messages).
    pub(super) fn cap(&self) -> usize {
        self.cap
    }
}

/// What makes audit records "the same": who, the action, the message and the details (which
/// hold the outcome: "REFUSED: ..." or what was read).
pub(super) type SeriesKey = (String, String, String, String);

/// Repeated audit records: the first of a series is written as always; the repeats within the
/// interval only counted, and written as one record with their count when the interval ends.
/// The chain is untouched by this (every record written is an ordinary link of it); what a
/// crash can lose is the count of the repeats of the last interval, never a first record.
pub(super) struct AuditSeries {
    series: Mutex<HashMap<SeriesKey, u64>>,
}

impl AuditSeries {
    pub(super) fn new() -> Self {
        Self { series: Mutex::default() }
    }

    /// True if `key` starts a series (write its record now); false if it repeats one (counted).
    pub(super) fn note(&self, key: SeriesKey) -> bool {
        let mut series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        match series.get_mut(&key) {
            Some(repeats) => {
                *repeats += 1;
                false
            }
            None => {
                series.insert(key, 0);
                true
            }
        }
    }

    /// Ends the interval: the series that had repeats, with their count; every series starts
    /// again.
    pub(super) fn take_repeats(&self) -> Vec<(SeriesKey, u64)> {
        let mut series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        series.drain().filter(|(_, repeats)| *repeats > 0).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_refuses_past_its_burst_and_refills_at_its_rate() {
        let limits = Limits { desk_calls_per_second: 2, desk_call_burst: 3, ..Limits::default() };
        let rate = CallRate::new(&limits);
        let start = Instant::now();
        for _ in 0..3 {
            rate.take("a", start).unwrap();
        }
        let wait = rate.take("a", start).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        rate.take("b", start).expect("another client has its own bucket");
        rate.take("a", start + Duration::from_millis(500)).unwrap();
        rate.take("a", start + Duration::from_millis(500)).unwrap_err();
    }

    #[test]
    fn streams_are_counted_per_client_until_dropped() {
        let count = StreamCount::new(&Limits { max_streams_per_client: 2, ..Limits::default() });
        let first = count.open("a").unwrap();
        let _second = count.open("a").unwrap();
        assert!(count.open("a").is_none());
        assert!(count.open("b").is_some());
        drop(first);
        assert!(count.open("a").is_some());
    }

    #[test]
    fn a_series_is_written_once_then_counted() {
        let series = AuditSeries::new();
        let key = || ("x".to_owned(), "Get".to_owned(), String::new(), "REFUSED".to_owned());
        assert!(series.note(key()));
        assert!(!series.note(key()));
        assert!(!series.note(key()));
        assert_eq!(series.take_repeats(), vec![(key(), 2)]);
        assert!(series.note(key()), "a new interval starts a new series");
        assert!(series.take_repeats().is_empty(), "no repeats: nothing more to write");
    }
}
