//! Origin certificates stored once each: every stored message needs the certificate whose key
//! signed its envelope (for `GetProof`), and one node signs thousands of messages with the same
//! one. A message record keeps the certificate's SHA-256 (`origin_certificate_sha256`); the DER
//! is under `f` sha256(32), written by the first write that needs it. Reads through the store
//! give the message with the whole certificate again, so nothing above the store changes.
//! Records written before this keep their whole certificate and read as they are.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::store::{Changes, StoreError, lock, prefixed};
use crate::store_proto::StoredMessage;

/// The key of a certificate by its SHA-256.
fn certificate_key(digest: &[u8; 32]) -> Vec<u8> {
    prefixed(b'f', digest)
}

/// Certificates known to be in sled (applied), by SHA-256: a node has a handful, so a write
/// reads sled for one only the first time. Emptied when the store is reopened after a failure,
/// since a write applied before the failure may not have survived it.
#[derive(Default)]
pub(super) struct Known(Mutex<HashMap<[u8; 32], Arc<[u8]>>>);

impl Known {
    pub(super) fn clear(&self) {
        lock(&self.0).clear();
    }

    /// Notes certificates a write applied.
    pub(super) fn extend(&self, applied: Vec<([u8; 32], Arc<[u8]>)>) {
        if !applied.is_empty() {
            lock(&self.0).extend(applied);
        }
    }
}

/// SHA-256 of a certificate.
fn digest_of(der: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let mut bytes = [0; 32];
    bytes.copy_from_slice(digest.as_ref());
    bytes
}

/// Puts back the whole certificate of a record that keeps only its SHA-256.
pub(super) fn resolve(known: &Known, db: &sled::Db, stored: &mut StoredMessage) -> Result<(), StoreError> {
    if !stored.origin_certificate.is_empty() || stored.origin_certificate_sha256.is_empty() {
        return Ok(());
    }
    let digest: [u8; 32] = stored.origin_certificate_sha256.as_slice().try_into().map_err(|_| {
        StoreError::Corrupt { key: "origin_certificate_sha256".into(), reason: "not 32 bytes".into() }
    })?;
    if let Some(der) = lock(&known.0).get(&digest) {
        stored.origin_certificate = der.to_vec();
        return Ok(());
    }
    let der = db.get(certificate_key(&digest))?.ok_or_else(|| StoreError::Corrupt {
        key: format!("certificate {}", hex::encode(digest)),
        reason: "a message names it but it is not stored".into(),
    })?;
    stored.origin_certificate = der.to_vec();
    lock(&known.0).insert(digest, Arc::from(der.as_ref()));
    Ok(())
}

impl Changes<'_> {
    /// The bytes of `stored` as its record keeps them: the origin certificate replaced by its
    /// SHA-256, and the certificate written in this batch unless it is stored already.
    pub(super) fn encode_record(&mut self, stored: &mut StoredMessage) -> Result<Vec<u8>, StoreError> {
        use prost::Message as _;
        if stored.origin_certificate.is_empty() {
            return Ok(stored.encode_to_vec());
        }
        let digest = digest_of(&stored.origin_certificate);
        let known = lock(&self.store.certificates.0).contains_key(&digest)
            || self.new_certificates.iter().any(|(d, _)| *d == digest);
        if !known {
            match self.store.db()?.get(certificate_key(&digest))? {
                Some(der) => self.new_certificates.push((digest, Arc::from(der.as_ref()))),
                None => {
                    self.batch.insert(certificate_key(&digest), &stored.origin_certificate);
                    self.new_certificates.push((digest, Arc::from(stored.origin_certificate.as_slice())));
                }
            }
        }
        let der = std::mem::take(&mut stored.origin_certificate);
        stored.origin_certificate_sha256 = digest.to_vec();
        let bytes = stored.encode_to_vec();
        stored.origin_certificate = der;
        Ok(bytes)
    }
}
