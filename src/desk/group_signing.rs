//! Signing the envelopes of concurrent `Submit`s together. Callers queue their envelope and take
//! turns; whoever has the turn lets the other ready tasks run once, then signs everything
//! queued so far, per destination, with one
//! signature over the group's Merkle tree (format 2, see `trust::signing`), and hands every
//! queued caller its signed envelope. A caller alone, or one whose destination has not said it
//! verifies batch signatures, signs alone (format 1).
//!
//! A group holds only envelopes to the same destination: its tree size and the sibling hashes on
//! each path are all a receiver learns of the group, and they then say nothing about traffic to
//! other members.
//!
//! Invariant: only the holder of the turn takes from the queue, so a caller that holds the turn
//! and has no answer yet still has its envelope in the queue.

use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

use crate::proto::Envelope;
use crate::trust::signing::{LiveSigner, Signer, SigningError};

/// An envelope signed, with the signer that signed it (its certificate is kept for proofs).
pub(crate) struct Signed {
    /// The envelope with its signature (and its inclusion path, in a group).
    pub envelope: Envelope,
    /// The signer whose key signed it.
    pub signer: Arc<Signer>,
}

/// A queued envelope and where its signed form goes.
struct Pending {
    envelope: Envelope,
    done: oneshot::Sender<Result<Signed, SigningError>>,
}

/// The queue and the turn of the desk's group signing.
#[derive(Default)]
pub(crate) struct GroupSigner {
    queue: Mutex<Vec<Pending>>,
    turn: tokio::sync::Mutex<()>,
}

impl GroupSigner {
    /// `envelope` signed with the current key: in a group with the envelopes other callers
    /// queued meanwhile when `in_groups` (its destination verifies batch signatures), else alone.
    pub async fn sign(
        &self,
        live: &LiveSigner,
        mut envelope: Envelope,
        in_groups: bool,
    ) -> Result<Signed, SigningError> {
        if !in_groups {
            let signer = live.current();
            signer.sign_envelope(&mut envelope)?;
            return Ok(Signed { envelope, signer });
        }
        let (done, mut answer) = oneshot::channel();
        self.queue().push(Pending { envelope, done });
        let _turn = self.turn.lock().await;
        if let Ok(signed) = answer.try_recv() {
            return signed;
        }
        // Let the Submits that are ready on this worker queue first: they join this group
        // instead of each signing alone. No timer: a lone caller loses about a microsecond.
        tokio::task::yield_now().await;
        let mut queued = std::mem::take(&mut *self.queue());
        let signer = live.current();
        queued.sort_by(|a, b| a.envelope.destination.cmp(&b.envelope.destination));
        while !queued.is_empty() {
            let destination = queued[0].envelope.destination.clone();
            let split =
                queued.iter().position(|p| p.envelope.destination != destination).unwrap_or(queued.len());
            let rest = queued.split_off(split);
            let (mut envelopes, senders): (Vec<Envelope>, Vec<_>) =
                queued.into_iter().map(|p| (p.envelope, p.done)).unzip();
            let outcome = signer.sign_envelopes(&mut envelopes);
            for (envelope, done) in envelopes.into_iter().zip(senders) {
                let signed = match &outcome {
                    Ok(()) => Ok(Signed { envelope, signer: Arc::clone(&signer) }),
                    Err(error) => Err(error.clone()),
                };
                // A caller that went away (its client cancelled) no longer wants its answer.
                let _ = done.send(signed);
            }
            queued = rest;
        }
        // Our own envelope was in the queue (the invariant above), so its answer is there.
        answer
            .try_recv()
            .unwrap_or_else(|_| Err(SigningError::Signature("the group signer lost an envelope".into())))
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Vec<Pending>> {
        // A poisoned lock means a panic while pushing or taking plain data; the queue is whole.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
