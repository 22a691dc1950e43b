//! Group commit: many writers, one flush. Every applied write gets a generation number; a writer
//! that needs its write durable waits until a flush that started after its write has finished.
//! One flusher thread runs flushes back to back while anyone waits, so concurrent `Submit`s (and
//! the envelopes of concurrent `Deliver` calls) share a flush instead of queueing for their own.
//!
//! Invariant: a waiter is released only by a flush that began after its write was applied (the
//! flusher reads `applied` before it flushes), so nobody is told "stored" too early.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tokio::sync::watch;

/// What the flusher has achieved so far.
#[derive(Debug, Clone, Default)]
struct Progress {
    /// Every write with a generation up to this one is durable.
    flushed: u64,
    /// How many flushes failed; a waiter that sees this change fails too.
    failures: u64,
    /// The last failure, in words.
    last_error: String,
}

#[derive(Debug, Default)]
struct State {
    /// The generation of the last applied write.
    applied: u64,
    /// The highest generation somebody waits for.
    requested: u64,
    /// Flushes done since start.
    flushes: u64,
    /// The owner went away: the flusher ends.
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    progress: watch::Sender<Progress>,
}

/// The group committer of one store. Dropping it ends its flusher thread.
pub struct GroupCommit {
    shared: Arc<Shared>,
}

impl GroupCommit {
    /// Starts the flusher thread; `flush` makes everything applied so far durable.
    pub fn start(mut flush: impl FnMut() -> Result<(), String> + Send + 'static) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            progress: watch::Sender::new(Progress::default()),
        });
        let flusher = Arc::clone(&shared);
        // Not joined: it ends when the owner drops (`closed`), and everything anyone waits for
        // is durable before their wait returns, so an exit that cuts it short loses nothing
        // that was acknowledged.
        std::thread::Builder::new().name("hanoi247-flusher".into()).spawn(move || {
            loop {
                let target = {
                    let mut state = flusher.state.lock().unwrap_or_else(|p| p.into_inner());
                    while state.requested <= flusher.progress.borrow().flushed && !state.closed {
                        // The timeout only guards against a lost wake-up; waiting is event driven.
                        state = flusher
                            .wake
                            .wait_timeout(state, Duration::from_secs(1))
                            .map(|(guard, _)| guard)
                            .unwrap_or_else(|p| p.into_inner().0);
                    }
                    if state.closed {
                        return;
                    }
                    state.flushes += 1;
                    // Read before flushing: this flush covers every write applied up to here.
                    state.applied
                };
                let result = flush();
                // Publish under the state lock, so a waiter registers either before the outcome
                // (and sees it) or after the reset below (and gets a flush of its own).
                let mut state = flusher.state.lock().unwrap_or_else(|p| p.into_inner());
                match result {
                    Ok(()) => flusher
                        .progress
                        .send_modify(|progress| progress.flushed = progress.flushed.max(target)),
                    Err(error) => {
                        flusher.progress.send_modify(|progress| {
                            progress.failures += 1;
                            progress.last_error = error;
                        });
                        // The waiters have their error; wait for the next request instead of
                        // retrying a broken device in a tight loop.
                        state.requested = flusher.progress.borrow().flushed;
                    }
                }
            }
        })?;
        Ok(Self { shared })
    }

    /// Records that a write was applied; returns its generation.
    pub fn applied(&self) -> u64 {
        let mut state = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        state.applied += 1;
        state.applied
    }

    /// The generation of the last applied write.
    pub fn last_applied(&self) -> u64 {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner()).applied
    }

    /// How many flushes have run.
    pub fn flushes(&self) -> u64 {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner()).flushes
    }

    /// Waits until every write up to `generation` is durable, or a flush fails meanwhile.
    pub async fn wait_durable(&self, generation: u64) -> Result<(), String> {
        let mut progress = self.shared.progress.subscribe();
        let failures_before = progress.borrow().failures;
        if progress.borrow().flushed >= generation {
            return Ok(());
        }
        {
            let mut state = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
            state.requested = state.requested.max(generation);
        }
        self.shared.wake.notify_one();
        loop {
            {
                let now = progress.borrow_and_update();
                if now.flushed >= generation {
                    return Ok(());
                }
                if now.failures != failures_before {
                    return Err(now.last_error.clone());
                }
            }
            if progress.changed().await.is_err() {
                return Err("the store is closed".into());
            }
        }
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner()).closed = true;
        self.shared.wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_waiters_share_flushes_and_none_is_released_early() {
        // The "device": a flush makes durable every write applied when it runs.
        let applied_marker = Arc::new(AtomicU64::new(0));
        let durable = Arc::new(AtomicU64::new(0));
        let (marker, on_disk) = (Arc::clone(&applied_marker), Arc::clone(&durable));
        let commit = Arc::new(
            GroupCommit::start(move || {
                let covered = marker.load(Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(2));
                on_disk.fetch_max(covered, Ordering::SeqCst);
                Ok(())
            })
            .unwrap(),
        );
        let mut tasks = Vec::new();
        for _ in 0..200 {
            let (commit, marker, durable) =
                (Arc::clone(&commit), Arc::clone(&applied_marker), Arc::clone(&durable));
            tasks.push(tokio::spawn(async move {
                // Like the store: the write is applied before it gets its generation.
                marker.fetch_add(1, Ordering::SeqCst);
                let generation = commit.applied();
                commit.wait_durable(generation).await.unwrap();
                assert!(durable.load(Ordering::SeqCst) >= generation, "released before its flush");
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let flushes = commit.flushes();
        assert!(flushes < 200, "200 writers should share flushes, got {flushes}");
    }

    #[tokio::test]
    async fn a_failed_flush_fails_its_waiters_without_retrying_in_a_loop() {
        let commit = GroupCommit::start(|| Err("disk full".into())).unwrap();
        let generation = commit.applied();
        assert_eq!(commit.wait_durable(generation).await.unwrap_err(), "disk full");
        let flushes = commit.flushes();
        // Nobody waits any more: the flusher must be idle, not spinning on the broken device.
        let second = commit.applied();
        assert_eq!(commit.wait_durable(second).await.unwrap_err(), "disk full");
        assert!(commit.flushes() <= flushes + 2, "{} flushes for two requests", commit.flushes());
    }
}
