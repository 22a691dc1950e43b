//! Conversions between wall-clock time and protobuf `Timestamp`, and human durations.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost_types::Timestamp;

/// Now, as a protobuf timestamp.
pub fn now() -> Timestamp {
    from_system(SystemTime::now())
}

/// A wall-clock time as a protobuf timestamp.
pub fn from_system(time: SystemTime) -> Timestamp {
    Timestamp::from(time)
}

/// A protobuf timestamp as wall-clock time (times before 1970 become 1970).
pub fn to_system(timestamp: &Timestamp) -> SystemTime {
    SystemTime::try_from(*timestamp).unwrap_or(UNIX_EPOCH)
}

/// `now + duration` as a timestamp.
pub fn after(duration: Duration) -> Timestamp {
    from_system(SystemTime::now() + duration)
}

/// RFC 3339 in UTC with milliseconds, e.g. `2026-11-25T09:41:07.123Z`.
pub fn rfc3339(timestamp: &Timestamp) -> String {
    humantime::format_rfc3339_millis(to_system(timestamp)).to_string()
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
}
