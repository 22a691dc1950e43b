//! Tamper evidence beyond the audit chain's own hashes, which anyone with the files can
//! recompute: the node signs its audit chain head and hands it to its peers in `Hello`, which keep
//! the newest they saw (as in Certificate Transparency's gossip: a log later cut short or
//! rewritten on disk no longer reaches what others witnessed), and it signs every backup's
//! checksum, which `restore` checks against the node certificate.
//!
//! Signed bytes (integers big-endian):
//!
//! - **Audit head.** `"hanoi247-audit-head-v1\n" || node code (2 ASCII bytes) || sequence (u64)
//!   || hash (32 bytes) || signed_at.seconds (i64) || signed_at.nanos (i32)`.
//! - **Backup.** `"hanoi247-backup-v1\n" || node code (2 ASCII bytes) || SHA-256 of the backup
//!   file's content (32 bytes)`.
//!
//! Both are ECDSA P-256 signatures with the node key, like envelopes and receipts; the prefixes
//! keep any of these from passing for another.

use std::time::SystemTime;

use prost_types::Timestamp;

use crate::domain::identity::{Identity, NodeCode};
use crate::proto::SignedAuditHead;
use crate::trust::signing::{self, Signer, SigningError};

/// Prefix of the bytes of a signed audit head.
pub const AUDIT_HEAD_CONTEXT: &[u8] = b"hanoi247-audit-head-v1\n";
/// Prefix of the bytes of a backup signature.
pub const BACKUP_CONTEXT: &[u8] = b"hanoi247-backup-v1\n";

/// The bytes after [`AUDIT_HEAD_CONTEXT`].
fn audit_head_body(node: &str, sequence: u64, hash: &[u8], signed_at: &Timestamp) -> Vec<u8> {
    let mut body = Vec::with_capacity(2 + 8 + 32 + 12);
    body.extend_from_slice(node.as_bytes());
    body.extend_from_slice(&sequence.to_be_bytes());
    body.extend_from_slice(hash);
    body.extend_from_slice(&signed_at.seconds.to_be_bytes());
    body.extend_from_slice(&signed_at.nanos.to_be_bytes());
    body
}

/// `node`'s audit head (`sequence`, `hash`) signed now with `signer`, carrying its certificate.
pub fn sign_audit_head(
    signer: &Signer,
    node: NodeCode,
    sequence: u64,
    hash: [u8; 32],
    signed_at: Timestamp,
) -> Result<SignedAuditHead, SigningError> {
    let signature = signer
        .sign_in_context(AUDIT_HEAD_CONTEXT, &audit_head_body(node.as_str(), sequence, &hash, &signed_at))?;
    Ok(SignedAuditHead {
        node: node.to_string(),
        sequence,
        hash: hash.to_vec(),
        signed_at: Some(signed_at),
        signature,
        certificate: signer.certificate().to_vec(),
    })
}

/// Checks that `head` is `node`'s and that its signature verifies with `certificate` (the one
/// the TLS handshake authenticated, or one [`check_head_certificate`] accepted).
pub fn verify_audit_head(
    head: &SignedAuditHead,
    node: NodeCode,
    certificate: &[u8],
) -> Result<(), SigningError> {
    if head.node != node.as_str() {
        return Err(SigningError::Mismatch(format!("the audit head names node '{}', not {node}", head.node)));
    }
    if head.hash.len() != 32 {
        return Err(SigningError::Mismatch(format!(
            "the audit head's hash has {} bytes, not 32",
            head.hash.len()
        )));
    }
    let signed_at = head
        .signed_at
        .as_ref()
        .ok_or_else(|| SigningError::Mismatch("the audit head has no signed_at".into()))?;
    let body = audit_head_body(&head.node, head.sequence, &head.hash, signed_at);
    signing::verify_with_certificate(certificate, &[AUDIT_HEAD_CONTEXT, &body].concat(), &head.signature)
}

/// Checks the certificate a head carries: `node`'s, from `network_ca`, valid when it signed.
pub fn check_head_certificate(
    head: &SignedAuditHead,
    network: &str,
    node: NodeCode,
    network_ca: &[u8],
) -> Result<(), SigningError> {
    let at = head.signed_at.as_ref().map_or(SystemTime::UNIX_EPOCH, crate::domain::timestamp::to_system);
    let expected = Identity::Node { network: network.to_owned(), code: node };
    signing::check_certificate(&head.certificate, network_ca, &expected, at)
}

/// The bytes after [`BACKUP_CONTEXT`].
fn backup_body(node: NodeCode, digest: &[u8; 32]) -> Vec<u8> {
    [node.as_str().as_bytes(), digest.as_slice()].concat()
}

/// The signature of a backup of `node` whose content has SHA-256 `digest`.
pub fn sign_backup(signer: &Signer, node: NodeCode, digest: &[u8; 32]) -> Result<Vec<u8>, SigningError> {
    signer.sign_in_context(BACKUP_CONTEXT, &backup_body(node, digest))
}

/// Checks a backup signature with the node certificate `certificate` (DER).
pub fn verify_backup(
    certificate: &[u8],
    node: NodeCode,
    digest: &[u8; 32],
    signature: &[u8],
) -> Result<(), SigningError> {
    signing::verify_with_certificate(
        certificate,
        &[BACKUP_CONTEXT, &backup_body(node, digest)].concat(),
        signature,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::pki::CertificateAuthority;

    fn signer(dir: &std::path::Path, ca: &CertificateAuthority, code: &str) -> Signer {
        let issued = ca.issue_node("net", code.parse().unwrap(), &[], 10).unwrap();
        let (cert, key, ca_path) =
            (dir.join(format!("{code}.pem")), dir.join(format!("{code}.key")), dir.join("ca.pem"));
        std::fs::write(&cert, &issued.cert_pem).unwrap();
        std::fs::write(&key, &issued.key_pem).unwrap();
        std::fs::write(&ca_path, ca.cert_pem()).unwrap();
        Signer::load(&cert, &key, &ca_path).unwrap()
    }

    #[test]
    fn a_signed_head_verifies_only_unchanged_for_its_node_and_never_as_a_backup() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::generate("net CA", 10).unwrap();
        let (vn, fr) = (signer(dir.path(), &ca, "VN"), signer(dir.path(), &ca, "FR"));
        let code: NodeCode = "VN".parse().unwrap();
        let at = crate::domain::timestamp::now();
        let head = sign_audit_head(&vn, code, 41, [9; 32], at).unwrap();
        verify_audit_head(&head, code, vn.certificate()).unwrap();
        let network_ca = vn.network_ca_of(&head.certificate).to_vec();
        check_head_certificate(&head, "net", code, &network_ca).unwrap();

        for changed in [
            SignedAuditHead { sequence: 40, ..head.clone() },
            SignedAuditHead { hash: vec![8; 32], ..head.clone() },
            SignedAuditHead {
                signed_at: Some(Timestamp { seconds: 1_800_000_001, nanos: 7 }),
                ..head.clone()
            },
        ] {
            assert!(verify_audit_head(&changed, code, vn.certificate()).is_err(), "{changed:?}");
        }
        assert!(verify_audit_head(&head, code, fr.certificate()).is_err(), "another node's key");
        let error = verify_audit_head(&head, "FR".parse().unwrap(), fr.certificate()).unwrap_err();
        assert!(error.to_string().contains("names node 'VN'"), "{error}");
        assert!(check_head_certificate(&head, "net", "FR".parse().unwrap(), &network_ca).is_err());

        // Domain separation: a backup signature over the same bytes is not a head signature.
        let digest = [9; 32];
        let backup = sign_backup(&vn, code, &digest).unwrap();
        verify_backup(vn.certificate(), code, &digest, &backup).unwrap();
        assert!(verify_backup(fr.certificate(), code, &digest, &backup).is_err());
        assert!(verify_backup(vn.certificate(), code, &[8; 32], &backup).is_err());
        let as_head = SignedAuditHead { signature: backup, ..head.clone() };
        assert!(verify_audit_head(&as_head, code, vn.certificate()).is_err());
    }
}
