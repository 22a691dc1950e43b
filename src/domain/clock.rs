//! The time a node goes by. Deadlines, expiry and retention ask a [`Clock`] instead of the
//! system, so that tests can move time forward instead of waiting for it; in production it is
//! the system's wall clock and nothing else.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// Where "now" comes from: the system clock, or a [`ManualClock`]'s hand. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    /// `None`: the system clock. Shared with the [`ManualClock`] that moves it.
    manual: Option<Arc<Mutex<SystemTime>>>,
}

impl Clock {
    /// The system's wall clock (what a node uses in production).
    pub fn system() -> Self {
        Self { manual: None }
    }

    /// A clock standing at `start` that moves only when its [`ManualClock`] is moved.
    pub fn manual(start: SystemTime) -> ManualClock {
        ManualClock::new(start)
    }

    /// The current time.
    pub fn now(&self) -> SystemTime {
        match &self.manual {
            None => SystemTime::now(),
            // A poisoned lock means a panic while writing a plain value; the value is whole.
            Some(hand) => *hand.lock().unwrap_or_else(|p| p.into_inner()),
        }
    }

    /// The current time as a protobuf timestamp.
    pub fn timestamp(&self) -> prost_types::Timestamp {
        crate::domain::timestamp::from_system(self.now())
    }

    /// `duration` from now, as a protobuf timestamp.
    pub fn after(&self, duration: Duration) -> prost_types::Timestamp {
        crate::domain::timestamp::from_system(crate::domain::timestamp::plus(self.now(), duration))
    }
}

/// The hand of a manual clock, for tests: the [`Clock`]s it hands out show what it was set to.
/// Kept apart from `Clock`, so that code given a `Clock` can read it but never move it.
#[derive(Clone, Debug)]
pub struct ManualClock {
    hand: Arc<Mutex<SystemTime>>,
}

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: SystemTime) -> Self {
        Self { hand: Arc::new(Mutex::new(start)) }
    }

    /// A clock that reads this hand (every clone reads the same one).
    pub fn clock(&self) -> Clock {
        Clock { manual: Some(Arc::clone(&self.hand)) }
    }

    /// The time the hand shows.
    pub fn now(&self) -> SystemTime {
        *self.lock()
    }

    /// Moves the hand forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut hand = self.lock();
        *hand += by;
    }

    /// Puts the hand at `at` (backwards too: a wall clock can be set back).
    pub fn set(&self, at: SystemTime) {
        *self.lock() = at;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SystemTime> {
        // A poisoned lock means a panic while writing a plain value; the value is whole.
        self.hand.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl From<&ManualClock> for Clock {
    fn from(manual: &ManualClock) -> Self {
        manual.clock()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told_and_every_copy_follows() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let manual = Clock::manual(start);
        let clock = manual.clock();
        let copy = clock.clone();
        assert_eq!(clock.now(), start);
        manual.advance(Duration::from_secs(31 * 86_400));
        assert_eq!(copy.now(), start + Duration::from_secs(31 * 86_400));
        manual.set(start);
        assert_eq!(clock.now(), start);
        assert_eq!(clock.after(Duration::from_secs(2)).seconds, 1_000_002);
    }

    #[test]
    fn the_system_clock_is_the_wall_clock() {
        let before = SystemTime::now();
        let now = Clock::system().now();
        assert!(now >= before && now <= SystemTime::now());
        assert!(Clock::default().manual.is_none(), "the default is the system clock");
    }
}
