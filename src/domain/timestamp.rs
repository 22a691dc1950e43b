//! Conversions between wall-clock time and protobuf `Timestamp`, and human durations. A
//! `Timestamp` comes from outside (a desk client, a peer, an older store): nothing here panics,
//! whatever its `seconds` and `nanos`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost_types::Timestamp;

/// The last second RFC 3339 can write (9999-12-31T23:59:59Z), as seconds since the epoch.
pub const MAX_SECONDS: i64 = 253_402_300_799;

/// The latest time this node computes or shows: the end of year 9999. Sums past it saturate
/// here, so every computed time can be formatted.
pub fn max_time() -> SystemTime {
    // Proven in range: 253_402_300_799 s fits a `SystemTime` on every platform Rust supports.
    UNIX_EPOCH + Duration::new(MAX_SECONDS as u64, 999_999_999)
}

/// Now, as a protobuf timestamp.
pub fn now() -> Timestamp {
    from_system(SystemTime::now())
}

/// A wall-clock time as a protobuf timestamp.
pub fn from_system(time: SystemTime) -> Timestamp {
    Timestamp::from(time)
}

/// A protobuf timestamp as wall-clock time, clamped to what this node works with: times before
/// 1970 become 1970, times after 9999 (or out of `SystemTime`'s range) the end of 9999.
pub fn to_system(timestamp: &Timestamp) -> SystemTime {
    if timestamp.seconds < 0 {
        return UNIX_EPOCH;
    }
    if !is_valid(timestamp) {
        return if timestamp.seconds > MAX_SECONDS { max_time() } else { normalized(timestamp) };
    }
    SystemTime::try_from(*timestamp).unwrap_or(UNIX_EPOCH).min(max_time())
}

/// `nanos` out of range but `seconds` sane: the instant it denotes, clamped.
fn normalized(timestamp: &Timestamp) -> SystemTime {
    let mut t = *timestamp;
    t.normalize();
    if t.seconds < 0 { UNIX_EPOCH } else { SystemTime::try_from(t).unwrap_or(UNIX_EPOCH).min(max_time()) }
}

/// `nanos` in `0..1_000_000_000` and `seconds` from 1970 to the end of 9999.
pub fn is_valid(timestamp: &Timestamp) -> bool {
    (0..1_000_000_000).contains(&timestamp.nanos) && (0..=MAX_SECONDS).contains(&timestamp.seconds)
}

/// `time + duration`, saturating at [`max_time`] instead of overflowing.
pub fn plus(time: SystemTime, duration: Duration) -> SystemTime {
    time.checked_add(duration).map_or_else(max_time, |sum| sum.min(max_time()))
}

/// `now + duration` as a timestamp (saturating, see [`plus`]).
pub fn after(duration: Duration) -> Timestamp {
    from_system(plus(SystemTime::now(), duration))
}

/// `later - earlier` in nanoseconds, exact for any two timestamps (i128 cannot overflow here).
pub fn nanos_between(earlier: &Timestamp, later: &Timestamp) -> i128 {
    let total = |t: &Timestamp| i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos);
    total(later) - total(earlier)
}

/// RFC 3339 in UTC with milliseconds, e.g. `2026-11-25T09:41:07.123Z`; a timestamp outside
/// 1970..=9999 or with `nanos` out of range is shown as `invalid time (seconds=…, nanos=…)`.
pub fn rfc3339(timestamp: &Timestamp) -> String {
    if !is_valid(timestamp) {
        return invalid(timestamp);
    }
    match SystemTime::try_from(*timestamp) {
        Ok(time) => humantime::format_rfc3339_millis(time).to_string(),
        Err(_) => invalid(timestamp),
    }
}

fn invalid(timestamp: &Timestamp) -> String {
    format!("invalid time (seconds={}, nanos={})", timestamp.seconds, timestamp.nanos)
}

/// How long ago, rounded for people: "4m12s".
pub fn age(since: &Timestamp) -> String {
    let elapsed = SystemTime::now().duration_since(to_system(since)).unwrap_or_default();
    humantime::format_duration(Duration::from_secs(elapsed.as_secs())).to_string().replace(' ', "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_the_instant() {
        let time = UNIX_EPOCH + Duration::from_millis(1_764_000_000_123);
        assert_eq!(to_system(&from_system(time)), time);
        assert_eq!(rfc3339(&from_system(time)), "2025-11-24T16:00:00.123Z");
    }

    #[test]
    fn any_timestamp_formats_without_panicking() {
        let last = Timestamp { seconds: MAX_SECONDS, nanos: 999_999_999 };
        assert_eq!(rfc3339(&last), "9999-12-31T23:59:59.999Z");
        for (seconds, nanos) in [
            (MAX_SECONDS + 1, 0),
            (i64::MAX, i32::MAX),
            (i64::MIN, i32::MIN),
            (-1, 0),
            (0, 2_000_000_000),
            (0, -1),
        ] {
            let t = Timestamp { seconds, nanos };
            assert!(rfc3339(&t).starts_with("invalid time (seconds="), "{t:?}");
            let _ = age(&t);
            let _ = to_system(&t);
        }
        assert_eq!(to_system(&Timestamp { seconds: i64::MAX, nanos: 0 }), max_time());
        assert_eq!(to_system(&Timestamp { seconds: -5, nanos: 0 }), UNIX_EPOCH);
    }

    #[test]
    fn sums_saturate_at_the_end_of_9999() {
        assert_eq!(plus(SystemTime::now(), Duration::MAX), max_time());
        assert_eq!(after(Duration::from_secs(u64::MAX)).seconds, MAX_SECONDS);
        let t = Timestamp { seconds: i64::MAX, nanos: i32::MAX };
        assert!(nanos_between(&Timestamp { seconds: i64::MIN, nanos: i32::MIN }, &t) > 0);
    }
}
