//! Witnessing peers' audit heads (issue 14): in every `Hello` the caller gives its signed audit
//! head and the answer gives the answering node's, and each side keeps the newest head it saw of
//! the other, durably, after checking the signature (`trust::witness`). The answer also hands
//! the caller the newest head of the caller's own log that the answering node kept, which the
//! caller shows its auditor (`ListAudit`'s `hanoi247-audit-witnessed` header): a log cut short or
//! rewritten on disk then no longer reaches what a peer witnessed, and `audit verify` names it.
//!
//! A head behind the one kept, or at the same sequence number with another hash, is never kept:
//! it is logged as an ERROR and counted (`hanoi247_audit_head_rollbacks`), because an honest log
//! only grows. (A node restored from an older backup shows as a rollback too, which is what its
//! peers should see.) The exception is a head behind the one kept that was also signed before
//! it: two Hellos of one peer crossing on the way (during a certificate rotation both sides
//! reconnect at once) bring its heads out of order, and the older one is simply late.

use crate::domain::identity::NodeCode;
use crate::proto::SignedAuditHead;
use crate::runtime::context::NodeContext;
use crate::runtime::metrics::labels;
use crate::store::StoreError;
use crate::trust::signing::SigningError;

/// Why a peer's head was not kept.
#[derive(Debug, thiserror::Error)]
pub enum WitnessError {
    /// The signature or the certificate does not check out.
    #[error("audit head of {node}: {source}")]
    Signature {
        /// The peer.
        node: NodeCode,
        /// Why.
        source: SigningError,
    },
    /// The store could not keep it.
    #[error("audit head of {node}: {source}")]
    Store {
        /// The peer.
        node: NodeCode,
        /// Why.
        source: StoreError,
    },
}

/// What became of a head given by a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Witnessed {
    /// Newer than the one kept: kept now.
    Kept,
    /// The one already kept.
    Same,
    /// Behind the one kept, or another hash at its sequence number: not kept.
    RolledBack,
    /// Behind the one kept and signed before it: a Hello that arrived late; not kept.
    Late,
}

/// What `head` is beside the head `kept` of the same peer.
fn judge(head: &SignedAuditHead, kept: Option<&SignedAuditHead>) -> Witnessed {
    match kept {
        None => Witnessed::Kept,
        Some(kept) if head.sequence > kept.sequence => Witnessed::Kept,
        Some(kept) if head.sequence == kept.sequence && head.hash == kept.hash => Witnessed::Same,
        Some(kept) if head.sequence < kept.sequence && signed_before(head, kept) => Witnessed::Late,
        Some(_) => Witnessed::RolledBack,
    }
}

/// Whether `head` was signed before `kept` (by the same node's clock).
fn signed_before(head: &SignedAuditHead, kept: &SignedAuditHead) -> bool {
    let at = |h: &SignedAuditHead| h.signed_at.map(|t| (t.seconds, t.nanos));
    matches!((at(head), at(kept)), (Some(head), Some(kept)) if head < kept)
}

/// This node's audit head as it stands, signed now; `None` (logged) if signing fails.
pub fn own_head(context: &NodeContext) -> Option<SignedAuditHead> {
    let head = context.store.audit_head();
    let signer = context.signer.current();
    let now = crate::domain::timestamp::from_system(context.clock.now());
    crate::trust::witness::sign_audit_head(&signer, context.code(), head.sequence, head.hash, now)
        .inspect_err(|error| tracing::warn!(%error, "could not sign the audit head for Hello"))
        .ok()
}

/// [`own_head`] to give `peer`, or `None` while this node, restored from a backup, has not yet
/// told that peer so in its `Recover` call: until then its shorter log would look like a
/// rollback to the peer.
pub fn own_head_for(context: &NodeContext, peer: NodeCode) -> Option<SignedAuditHead> {
    match context.store.recovery_pending(peer) {
        Ok(None) => own_head(context),
        Ok(Some(_)) => None,
        Err(error) => {
            tracing::warn!(%error, peer = %peer, "reading whether a recovery is pending");
            None
        }
    }
}

/// Checks `head`, given by `peer`, with `certificate` (the peer's, already authenticated), and
/// keeps it if it is newer than the head kept of `peer`.
pub async fn keep(
    context: &NodeContext,
    peer: NodeCode,
    head: &SignedAuditHead,
    certificate: &[u8],
) -> Result<Witnessed, WitnessError> {
    if let Err(source) = crate::trust::witness::verify_audit_head(head, peer, certificate) {
        let labels = labels(&[("peer", peer.as_str()), ("signed", "audit_head")]);
        context.metrics.signature_failures.get_or_create(&labels).inc();
        return Err(WitnessError::Signature { node: peer, source });
    }
    let store = |source| WitnessError::Store { node: peer, source };
    let compare = |kept: &Option<SignedAuditHead>| judge(head, kept.as_ref());
    // Most Hellos bring the head already kept: no write then.
    let kept = context.store.witnessed_head(peer).map_err(store)?;
    let (outcome, kept) = match compare(&kept) {
        Witnessed::Kept => context
            .store
            // Compared again under the store's writer lock, so two Hellos of one peer at once
            // cannot replace a newer head with an older one.
            .write(|changes| {
                let kept = context.store.witnessed_head(peer)?;
                let outcome = compare(&kept);
                if outcome == Witnessed::Kept {
                    changes.keep_witnessed_head(peer, head);
                }
                Ok::<_, StoreError>((outcome, kept))
            })
            .map_err(store)?,
        outcome => (outcome, kept),
    };
    match (outcome, kept) {
        (Witnessed::Kept, _) => context.store.persist().await.map_err(store)?,
        (Witnessed::RolledBack, Some(kept)) => {
            context.metrics.audit_head_rollbacks.get_or_create(&labels(&[("peer", peer.as_str())])).inc();
            tracing::error!(
                peer = %peer,
                kept_sequence = kept.sequence,
                kept_hash = %hex::encode(&kept.hash),
                given_sequence = head.sequence,
                given_hash = %hex::encode(&head.hash),
                "a peer's audit log went back: the head it gave is behind, or forks from, the head it signed before (its log was cut short or rewritten); the older head is kept as evidence"
            );
        }
        _ => {}
    }
    Ok(outcome)
}

/// Keeps `head`, given by `peer` in a `Recover` call (checked with its authenticated
/// `certificate`), as the newest head witnessed of it even when it is behind the one kept: the
/// peer says it restarted from a backup. Not silent: the head it replaces goes into this node's
/// audit log (`PEER_RESTORED_FROM_BACKUP`), so the restart stays visible to auditors; a node
/// that was not restored never sends this, and its shorter log in `Hello` is still a rollback.
/// Returns the head replaced, if any.
pub async fn accept_restart(
    context: &NodeContext,
    peer: NodeCode,
    head: &SignedAuditHead,
    certificate: &[u8],
) -> Result<Option<SignedAuditHead>, WitnessError> {
    if let Err(source) = crate::trust::witness::verify_audit_head(head, peer, certificate) {
        let labels = labels(&[("peer", peer.as_str()), ("signed", "audit_head")]);
        context.metrics.signature_failures.get_or_create(&labels).inc();
        return Err(WitnessError::Signature { node: peer, source });
    }
    let store = |source| WitnessError::Store { node: peer, source };
    let kept = context.store.witnessed_head(peer).map_err(store)?;
    if matches!(judge(head, kept.as_ref()), Witnessed::Kept | Witnessed::Same) {
        // Not behind: no restart to announce (a recovery asked again), an ordinary head.
        keep(context, peer, head, certificate).await?;
        return Ok(None);
    }
    let replaced = context
        .store
        .write(|changes| {
            let kept = context.store.witnessed_head(peer)?;
            let described = |h: &SignedAuditHead| format!("{} ({})", h.sequence, hex::encode(&h.hash));
            let details = format!(
                "{peer} restarted from a backup: its audit head {} replaces the witnessed {}",
                described(head),
                kept.as_ref().map_or_else(|| "(none)".to_owned(), described)
            );
            changes.act_as(format!("peer:{peer}"));
            changes.audit("PEER_RESTORED_FROM_BACKUP", "", &details);
            changes.keep_witnessed_head(peer, head);
            Ok::<_, StoreError>(kept)
        })
        .map_err(store)?;
    context.store.persist().await.map_err(store)?;
    context.metrics.audit_head_restarts.get_or_create(&labels(&[("peer", peer.as_str())])).inc();
    tracing::warn!(peer = %peer, given_sequence = head.sequence, "a peer restarted from a backup and recovers from this node; its audit head is taken as it stands now");
    Ok(replaced)
}

/// The caller's side of `Hello`'s answer: keeps the peer's own head (its certificate checked
/// against the network CA) and notes what the peer witnessed of this node's log.
pub async fn on_hello_answer(
    context: &NodeContext,
    peer: NodeCode,
    theirs: Option<&SignedAuditHead>,
    mine: Option<&SignedAuditHead>,
) {
    if let Some(head) = theirs {
        let signer = context.signer.current();
        let network_ca = signer.network_ca_of(&head.certificate);
        let checked =
            crate::trust::witness::check_head_certificate(head, &context.config.network, peer, network_ca)
                .map_err(|source| WitnessError::Signature { node: peer, source });
        let result = match checked {
            Ok(()) => keep(context, peer, head, &head.certificate).await.map(|_| ()),
            Err(error) => Err(error),
        };
        if let Err(error) = result {
            tracing::warn!(%error, "audit head from Hello not kept");
        }
    }
    let Some(mine) = mine else { return };
    let signer = context.signer.current();
    match crate::trust::witness::verify_audit_head(mine, context.code(), signer.certificate()) {
        Ok(()) => context.peers.update(peer, |status| status.witnessed_my_head = Some(mine.clone())),
        Err(error) => {
            tracing::warn!(peer = %peer, %error, "the head of this node's audit log that the peer witnessed does not verify with this node's certificate (a new key since?)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(sequence: u64, hash: u8, signed_at: i64) -> SignedAuditHead {
        SignedAuditHead {
            sequence,
            hash: vec![hash; 32],
            signed_at: Some(prost_types::Timestamp { seconds: signed_at, nanos: 0 }),
            ..Default::default()
        }
    }

    #[test]
    fn a_late_hello_is_not_a_rollback_but_a_shorter_log_signed_later_is() {
        let kept = head(10, 1, 1_000);
        assert_eq!(judge(&head(11, 2, 1_001), Some(&kept)), Witnessed::Kept);
        assert_eq!(judge(&head(10, 1, 1_005), Some(&kept)), Witnessed::Same);
        // Signed before the head kept: an older Hello that crossed a newer one.
        assert_eq!(judge(&head(9, 3, 999), Some(&kept)), Witnessed::Late);
        // Signed after it with a shorter log: the log went back.
        assert_eq!(judge(&head(9, 3, 1_001), Some(&kept)), Witnessed::RolledBack);
        // Another hash at the same sequence number is a fork, whenever it was signed.
        assert_eq!(judge(&head(10, 4, 999), Some(&kept)), Witnessed::RolledBack);
        assert_eq!(judge(&head(1, 1, 1), None), Witnessed::Kept);
    }
}
