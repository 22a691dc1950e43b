//! Who gets a socket at all: the caps a listener puts on connections before any TLS byte is
//! read (connections open, handshakes under way, connections per remote address), and the
//! refusals, counted and logged at most once per interval so that a scanner cannot fill the log.
//!
//! A refused connection is closed at once: it never costs more than the moment of its accept.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::domain::validation::Limits;

/// Why a connection was refused or dropped before it carried a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The listener had `max_connections_per_listener` open.
    Connections,
    /// The listener had `max_handshakes_per_listener` under way.
    Handshakes,
    /// The remote address had `max_peer_connections_per_address` open.
    Address,
    /// The TLS handshake failed (unknown CA, no certificate, revoked, not TLS).
    Handshake,
    /// The TLS handshake did not finish within `handshake_timeout`.
    Timeout,
}

impl Refusal {
    /// The metric label of this reason.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Connections => "connections",
            Refusal::Handshakes => "handshakes",
            Refusal::Address => "address",
            Refusal::Handshake => "handshake",
            Refusal::Timeout => "timeout",
        }
    }
}

/// Told of every refusal, with the listener's name (the node counts them in a metric).
pub type RefusalCounter = Arc<dyn Fn(&'static str, Refusal) + Send + Sync>;

/// Connections open per remote address.
type OpenPerAddress = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// One listener's caps and its refusal log.
pub struct Admission {
    listener: &'static str,
    connections: Arc<Semaphore>,
    handshakes: Arc<Semaphore>,
    /// `None`: no cap per address (desk and console listen on loopback for local clients).
    per_address: Option<(usize, OpenPerAddress)>,
    handshake_timeout: Duration,
    log: RefusalLog,
    counter: RefusalCounter,
}

/// What an admitted connection holds while it is open: its place among the listener's
/// connections and its remote address's. Dropping it gives them back.
pub struct ConnectionSlot {
    _connection: OwnedSemaphorePermit,
    address: Option<(IpAddr, OpenPerAddress)>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        if let Some((ip, open)) = self.address.take() {
            let mut open = open.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(count) = open.get_mut(&ip) {
                *count -= 1;
                if *count == 0 {
                    open.remove(&ip);
                }
            }
        }
    }
}

impl Admission {
    /// The caps of `limits` for listener `listener`; `per_address` applies
    /// `max_peer_connections_per_address` (the peer listener).
    pub fn new(
        listener: &'static str,
        limits: &Limits,
        per_address: bool,
        counter: RefusalCounter,
    ) -> Arc<Self> {
        Arc::new(Self {
            listener,
            connections: Arc::new(Semaphore::new(limits.max_connections_per_listener)),
            handshakes: Arc::new(Semaphore::new(limits.max_handshakes_per_listener)),
            per_address: per_address.then(|| (limits.max_peer_connections_per_address, Arc::default())),
            handshake_timeout: limits.handshake_timeout,
            log: RefusalLog::new(limits.refusal_log_interval),
            counter,
        })
    }

    /// How long a handshake may take.
    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }

    /// A place for a connection from `remote` and for its handshake, or why not. Decided
    /// without waiting: a full listener refuses rather than queues.
    pub fn admit(&self, remote: IpAddr) -> Result<(ConnectionSlot, OwnedSemaphorePermit), Refusal> {
        let connection =
            Arc::clone(&self.connections).try_acquire_owned().map_err(|_| Refusal::Connections)?;
        let handshake = Arc::clone(&self.handshakes).try_acquire_owned().map_err(|_| Refusal::Handshakes)?;
        let address = match &self.per_address {
            None => None,
            Some((cap, open)) => {
                let mut counts = open.lock().unwrap_or_else(PoisonError::into_inner);
                let count = counts.entry(remote).or_insert(0);
                if *count >= *cap {
                    return Err(Refusal::Address);
                }
                *count += 1;
                Some((remote, Arc::clone(open)))
            }
        };
        Ok((ConnectionSlot { _connection: connection, address }, handshake))
    }

    /// Counts a refusal and logs it, at most one WARN per interval for this listener (the
    /// next one says how many were not logged).
    pub fn refused(&self, remote: SocketAddr, why: Refusal, detail: &dyn std::fmt::Display) {
        (self.counter)(self.listener, why);
        if let Some(suppressed) = self.log.should_log(Instant::now()) {
            tracing::warn!(
                listener = self.listener,
                %remote,
                reason = why.label(),
                %detail,
                not_logged_since_last = suppressed,
                "connection refused (further refusals on this listener are counted in hanoi247_connections_refused_total and logged at most once per limits.refusal_log_interval)"
            );
        }
    }
}

/// At most one line per interval: the first refusal of an interval is logged with the count of
/// those since the last line.
struct RefusalLog {
    interval: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl RefusalLog {
    fn new(interval: Duration) -> Self {
        Self { interval, state: Mutex::new((None, 0)) }
    }

    /// `Some(not logged since the last line)` if this refusal is to be logged.
    fn should_log(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let (last, suppressed) = &mut *state;
        match last {
            Some(at) if now.saturating_duration_since(*at) < self.interval => {
                *suppressed += 1;
                None
            }
            _ => {
                *last = Some(now);
                Some(std::mem::take(suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(connections: usize, handshakes: usize, per_address: usize) -> Limits {
        Limits {
            max_connections_per_listener: connections,
            max_handshakes_per_listener: handshakes,
            max_peer_connections_per_address: per_address,
            ..Limits::default()
        }
    }

    #[test]
    fn caps_refuse_and_slots_come_back() {
        let admission = Admission::new("peer", &limits(3, 2, 2), true, Arc::new(|_, _| {}));
        let (a, b) = ("127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap());
        let (first, first_handshake) = admission.admit(a).unwrap();
        let (_second, second_handshake) = admission.admit(a).unwrap();
        assert_eq!(admission.admit(b).err(), Some(Refusal::Handshakes));
        drop((first_handshake, second_handshake));
        assert_eq!(admission.admit(a).err(), Some(Refusal::Address));
        let (_third, _) = admission.admit(b).unwrap();
        assert_eq!(admission.admit(b).err(), Some(Refusal::Connections));
        drop(first);
        let (_again, _) = admission.admit(a).unwrap();
    }

    #[test]
    fn the_log_says_one_line_per_interval_with_the_count_left_out() {
        let log = RefusalLog::new(Duration::from_secs(10));
        let start = Instant::now();
        assert_eq!(log.should_log(start), Some(0));
        for n in 1..=5 {
            assert_eq!(log.should_log(start + Duration::from_secs(n)), None);
        }
        assert_eq!(log.should_log(start + Duration::from_secs(11)), Some(5));
        assert_eq!(log.should_log(start + Duration::from_secs(12)), None);
    }
}
