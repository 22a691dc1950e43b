//! Crash points, for crash tests: a node started with `HANOI247_CRASH_AT=<point>:<n>` in its
//! environment kills itself with SIGKILL the `n`-th time it reaches `<point>`, so a test can
//! kill it exactly inside a log append (half a frame written), a checkpoint (sled flushed, its
//! file not yet synced) or a log cut (one segment deleted, the folder not yet synced) instead of
//! hoping a timed kill lands there. The points: `append`, `checkpoint`, `cut`, and
//! `submit-answer` (a `Submit` durable, its answer not yet sent: the desk passes it).
//!
//! Unset (always, outside tests), a point costs one atomic load. Nothing else reads the
//! variable; a malformed value is ignored with a WARN at the first point reached.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The variable that arms a crash point.
pub const VARIABLE: &str = "HANOI247_CRASH_AT";

/// The armed point and after how many passes it fires.
fn armed() -> Option<&'static (String, u64)> {
    static ARMED: OnceLock<Option<(String, u64)>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let value = std::env::var(VARIABLE).ok()?;
            let parsed =
                value.split_once(':').and_then(|(point, n)| Some((point.to_owned(), n.parse().ok()?)));
            if parsed.is_none() {
                tracing::warn!(%value, "{VARIABLE} is not <point>:<n>; no crash point armed");
            }
            parsed
        })
        .as_ref()
}

/// Whether `point` is the armed one (a point that must prepare its crash, like writing half a
/// frame, asks first).
pub fn armed_for(point: &str) -> bool {
    armed().is_some_and(|(armed, _)| armed == point)
}

/// Passes through `point`; kills the process when it is the armed point's `n`-th pass.
pub fn reached(point: &str) {
    static PASSES: AtomicU64 = AtomicU64::new(0);
    let Some((armed, n)) = armed() else { return };
    if armed == point && PASSES.fetch_add(1, Ordering::Relaxed) + 1 == *n {
        // SAFETY: kill(2) on our own pid with a valid signal number has no memory effects.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}
