//! Non-repudiation: the origin signs every envelope, the receiver signs every receipt, and both
//! signatures are checked against certificates issued by the network CA.
//!
//! Canonical encodings (the bytes that are signed; also in the proto comments):
//!
//! - **Envelope.** The canonical encoding is the protobuf encoding of the envelope with
//!   `origin_signature` cleared, as prost writes it: fields in field-number order, proto3 default
//!   values omitted, repeated scalars packed, no unknown fields. Its SHA-256 is the envelope's
//!   *digest*. The origin signs `"hanoi247-envelope-v1\n" || digest`.
//! - **Receipt.** The receiver signs `"hanoi247-receipt-v1\n" || digest (32 bytes) || u16 BE
//!   length || envelope id || u16 BE length || receiver code || received_at.seconds (i64 BE) ||
//!   received_at.nanos (i32 BE)`. `duplicate` is not signed (a duplicate is the same receipt).
//!
//! - **Batches (format 2).** An origin that stores several envelopes together may sign them once:
//!   it builds a Merkle tree ([`crate::trust::merkle`], RFC 9162 §2.1) whose leaves are the
//!   envelopes' digests and signs `"hanoi247-envelope-batch-v2\n" || tree size (u64 BE) || root`;
//!   each envelope carries the signature with its inclusion path (`Envelope.origin_batch`, which
//!   the canonical encoding leaves out, like the signature). A receiver signs the receipts of one
//!   `Deliver` batch the same way: leaves `"hanoi247-receipt-leaf-v2\n" || the format-1 receipt
//!   fields after the prefix`, signed bytes `"hanoi247-receipt-batch-v2\n" || size || root`, the
//!   path in `Receipt.receipt_batch`. A batch of one is signed in format 1. Format 1 stays valid
//!   everywhere: a member signs format 2 only for a peer that said it verifies it.
//!
//! Signatures are ECDSA P-256 with SHA-256, ASN.1 DER, made with the node's TLS key (`pki` makes
//! every key P-256). The domain-separation prefixes keep an envelope signature from ever passing
//! as a receipt signature, and a batch signature as a single one, and the other way round.
//!
//! **Boundary:** pure cryptography over bytes and certificates; never reads the store or the
//! network. Certificates are checked here without the TLS stack, so a proof verifies offline.

use std::path::Path;
use std::time::SystemTime;

use prost::Message as _;
use prost_types::Timestamp;
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _, UnparsedPublicKey,
};
use rustls::pki_types::PrivateKeyDer;
use x509_parser::certificate::X509Certificate;
use x509_parser::time::ASN1Time;

use crate::domain::identity::{Identity, identity_of_cert};
use crate::proto::{BatchInclusion, Envelope, Receipt};
use crate::trust::merkle::{self, Hash};
use crate::trust::tls;

/// Prefix of the bytes an origin signs.
pub const ENVELOPE_CONTEXT: &[u8] = b"hanoi247-envelope-v1\n";
/// Prefix of the bytes a receiver signs.
pub const RECEIPT_CONTEXT: &[u8] = b"hanoi247-receipt-v1\n";
/// Prefix of the bytes an origin signs for a batch of envelopes (format 2).
pub const ENVELOPE_BATCH_CONTEXT: &[u8] = b"hanoi247-envelope-batch-v2\n";
/// Prefix of a receipt's leaf in a batch of receipts (format 2).
pub const RECEIPT_LEAF_CONTEXT: &[u8] = b"hanoi247-receipt-leaf-v2\n";
/// Prefix of the bytes a receiver signs for a batch of receipts (format 2).
pub const RECEIPT_BATCH_CONTEXT: &[u8] = b"hanoi247-receipt-batch-v2\n";
/// `BatchInclusion.format` of a batch signature.
pub const BATCH_FORMAT: u32 = 2;

/// A signature, certificate or key that does not check out.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SigningError {
    /// The node's key or certificate file cannot be used for signing.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A certificate cannot be parsed or has no usable key.
    #[error("certificate: {0}")]
    Certificate(String),
    /// A certificate does not chain to the network CA, is not valid at the time, or names
    /// someone else.
    #[error("certificate chain: {0}")]
    Chain(String),
    /// A signature is missing or does not verify.
    #[error("signature: {0}")]
    Signature(String),
    /// A receipt does not match the envelope it claims to be for.
    #[error("receipt: {0}")]
    Mismatch(String),
    /// A batch member's inclusion path does not lead to a root (format 2).
    #[error("batch inclusion: {0}")]
    Inclusion(String),
}

/// The canonical encoding of `envelope`: what its signature and digest cover.
pub fn canonical_envelope(envelope: &Envelope) -> Vec<u8> {
    let mut unsigned = envelope.clone();
    unsigned.origin_signature.clear();
    unsigned.origin_batch = None;
    unsigned.encode_to_vec()
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// The envelope's digest: SHA-256 of its canonical encoding.
pub fn envelope_digest(envelope: &Envelope) -> [u8; 32] {
    sha256(&canonical_envelope(envelope))
}

/// The bytes an origin signs for an envelope with this digest.
pub fn envelope_signed_bytes(digest: &[u8]) -> Vec<u8> {
    [ENVELOPE_CONTEXT, digest].concat()
}

/// The bytes a receiver signs for a receipt (see the module documentation for the layout).
pub fn receipt_signed_bytes(
    digest: &[u8],
    envelope_id: &str,
    receiver: &str,
    received_at: &Timestamp,
) -> Vec<u8> {
    [RECEIPT_CONTEXT, &receipt_fields(digest, envelope_id, receiver, received_at)].concat()
}

/// A receipt's leaf in a batch of receipts (format 2): the format-1 fields under their own prefix.
pub fn receipt_leaf(digest: &[u8], envelope_id: &str, receiver: &str, received_at: &Timestamp) -> Vec<u8> {
    [RECEIPT_LEAF_CONTEXT, &receipt_fields(digest, envelope_id, receiver, received_at)].concat()
}

/// The receipt fields both formats sign, laid out after their prefix.
fn receipt_fields(digest: &[u8], envelope_id: &str, receiver: &str, received_at: &Timestamp) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(32 + 4 + envelope_id.len() + receiver.len() + 12);
    bytes.extend_from_slice(digest);
    for text in [envelope_id, receiver] {
        // Ids and node codes are short; a longer text is cut off at u16::MAX, which no valid
        // envelope reaches (validation limits ids to UUIDs).
        let length = u16::try_from(text.len()).unwrap_or(u16::MAX);
        bytes.extend_from_slice(&length.to_be_bytes());
        bytes.extend_from_slice(&text.as_bytes()[..usize::from(length)]);
    }
    bytes.extend_from_slice(&received_at.seconds.to_be_bytes());
    bytes.extend_from_slice(&received_at.nanos.to_be_bytes());
    bytes
}

/// The bytes a batch signature (format 2) covers: `context || tree_size (u64 BE) || root`.
pub fn batch_signed_bytes(context: &[u8], tree_size: u64, root: &Hash) -> Vec<u8> {
    [context, &tree_size.to_be_bytes(), root].concat()
}

/// The root that a member's inclusion path leads to from its leaf (`leaf_data`, unhashed).
pub fn inclusion_root(leaf_data: &[u8], inclusion: &BatchInclusion) -> Result<Hash, SigningError> {
    if inclusion.format != BATCH_FORMAT {
        return Err(SigningError::Inclusion(format!(
            "signature format {} is not {BATCH_FORMAT}, the batch format this version knows",
            inclusion.format
        )));
    }
    let path = audit_path(inclusion)?;
    merkle::root_from_path(&merkle::leaf_hash(leaf_data), inclusion.leaf_index, inclusion.tree_size, &path)
        .map_err(|e| SigningError::Inclusion(e.to_string()))
}

/// The steps of an inclusion path as hashes.
fn audit_path(inclusion: &BatchInclusion) -> Result<Vec<Hash>, SigningError> {
    inclusion
        .audit_path
        .iter()
        .enumerate()
        .map(|(i, step)| {
            Hash::try_from(step.as_slice()).map_err(|_| {
                SigningError::Inclusion(format!("audit path step {i} is {} bytes, not 32", step.len()))
            })
        })
        .collect()
}

/// What a signature covers: in format 1 (`inclusion` unset) the member alone (`single`), in
/// format 2 the root its inclusion path leads to from `leaf_data`, under `batch_context`.
pub fn covered_bytes(
    single: impl FnOnce() -> Vec<u8>,
    batch_context: &[u8],
    leaf_data: &[u8],
    inclusion: Option<&BatchInclusion>,
) -> Result<Vec<u8>, SigningError> {
    match inclusion {
        None => Ok(single()),
        Some(inclusion) => {
            let root = inclusion_root(leaf_data, inclusion)?;
            Ok(batch_signed_bytes(batch_context, inclusion.tree_size, &root))
        }
    }
}

/// A parsed certificate, with errors that say what is wrong.
fn parse(der: &[u8]) -> Result<X509Certificate<'_>, SigningError> {
    if der.is_empty() {
        return Err(SigningError::Certificate("missing".into()));
    }
    x509_parser::parse_x509_certificate(der)
        .map(|(_, cert)| cert)
        .map_err(|e| SigningError::Certificate(format!("not a DER X.509 certificate: {e}")))
}

/// The uncompressed P-256 point of a certificate's key.
fn p256_key<'a>(cert: &'a X509Certificate<'_>) -> Result<&'a [u8], SigningError> {
    let spki = cert.public_key();
    let point = spki.subject_public_key.data.as_ref();
    if spki.algorithm.algorithm != x509_parser::oid_registry::OID_KEY_TYPE_EC_PUBLIC_KEY || point.len() != 65
    {
        return Err(SigningError::Certificate(format!(
            "the key of '{}' is not ECDSA P-256, the only signature algorithm of hanoi247",
            cert.subject()
        )));
    }
    Ok(point)
}

/// Checks an ECDSA P-256 signature over `message` with the key of the certificate `der`.
pub fn verify_with_certificate(der: &[u8], message: &[u8], signature: &[u8]) -> Result<(), SigningError> {
    let cert = parse(der)?;
    let key = p256_key(&cert)?;
    if signature.is_empty() {
        return Err(SigningError::Signature("missing".into()));
    }
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, key)
        .verify(message, signature)
        .map_err(|_| SigningError::Signature(format!("does not verify with the key of '{}'", cert.subject())))
}

/// Checks that the envelope's `origin_signature` was made by the key of `certificate`, alone
/// (format 1) or over the batch its `origin_batch` path leads to (format 2); returns the
/// envelope's digest.
pub fn verify_envelope(envelope: &Envelope, certificate: &[u8]) -> Result<[u8; 32], SigningError> {
    verify_envelope_with(envelope, certificate, None)
}

/// [`verify_envelope`], with a batch signature answered from `batches` when another member of
/// the same batch was verified before.
pub fn verify_envelope_with(
    envelope: &Envelope,
    certificate: &[u8],
    batches: Option<&VerifiedBatches>,
) -> Result<[u8; 32], SigningError> {
    let digest = envelope_digest(envelope);
    let inclusion = envelope.origin_batch.as_ref();
    let covered =
        covered_bytes(|| envelope_signed_bytes(&digest), ENVELOPE_BATCH_CONTEXT, &digest, inclusion)?;
    verify_covered(certificate, &covered, &envelope.origin_signature, inclusion.and(batches))?;
    Ok(digest)
}

/// Checks a signature over `covered`, through `batches` when given (batch signatures only: a
/// format-1 signature covers one member, so remembering it saves nothing).
fn verify_covered(
    certificate: &[u8],
    covered: &[u8],
    signature: &[u8],
    batches: Option<&VerifiedBatches>,
) -> Result<(), SigningError> {
    match batches {
        Some(batches) => batches.verify(certificate, covered, signature),
        None => verify_with_certificate(certificate, covered, signature),
    }
}

/// Batch signatures already verified: a receiver checks each signed root once, however many
/// members of the batch arrive (in one call or several). Holds a few thousand entries at most
/// (it starts over beyond that); an entry is the exact certificate, signed bytes and signature.
#[derive(Debug, Default)]
pub struct VerifiedBatches(std::sync::Mutex<std::collections::HashSet<Hash>>);

/// Most signatures [`VerifiedBatches`] remembers.
const VERIFIED_BATCHES: usize = 4096;

impl VerifiedBatches {
    /// [`verify_with_certificate`], answered from memory for exactly these bytes seen good before.
    pub fn verify(&self, certificate: &[u8], covered: &[u8], signature: &[u8]) -> Result<(), SigningError> {
        let mut hasher = ring::digest::Context::new(&ring::digest::SHA256);
        for part in [certificate, covered, signature] {
            hasher.update(&(part.len() as u64).to_be_bytes());
            hasher.update(part);
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(hasher.finish().as_ref());
        if self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).contains(&key) {
            return Ok(());
        }
        verify_with_certificate(certificate, covered, signature)?;
        let mut known = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if known.len() >= VERIFIED_BATCHES {
            known.clear();
        }
        known.insert(key);
        Ok(())
    }
}

/// Checks that `certificate` was issued by `ca`, was valid at `at` (as was the CA) and carries
/// exactly the identity `expected`.
pub fn check_certificate(
    certificate: &[u8],
    ca: &[u8],
    expected: &Identity,
    at: SystemTime,
) -> Result<(), SigningError> {
    check_certificate_window(certificate, ca, expected, at).map(|_| ())
}

/// [`check_certificate`], returning when the certificate and the CA are both valid (Unix
/// seconds, inclusive): the same chain checks the same at any time in that window.
fn check_certificate_window(
    certificate: &[u8],
    ca: &[u8],
    expected: &Identity,
    at: SystemTime,
) -> Result<(i64, i64), SigningError> {
    let cert = parse(certificate)?;
    let ca_cert = parse(ca).map_err(|e| SigningError::Chain(format!("network CA {e}")))?;
    if !ca_cert.is_ca() {
        return Err(SigningError::Chain(format!("'{}' is not a CA certificate", ca_cert.subject())));
    }
    if cert.issuer() != ca_cert.subject() {
        return Err(SigningError::Chain(format!(
            "'{}' was issued by '{}', not by the network CA '{}'",
            cert.subject(),
            cert.issuer(),
            ca_cert.subject()
        )));
    }
    cert.verify_signature(Some(ca_cert.public_key())).map_err(|e| {
        SigningError::Chain(format!(
            "'{}' does not carry a valid signature of '{}': {e}",
            cert.subject(),
            ca_cert.subject()
        ))
    })?;
    let seconds = at.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let when = ASN1Time::from_timestamp(i64::try_from(seconds).unwrap_or(i64::MAX))
        .map_err(|e| SigningError::Chain(format!("time out of range: {e}")))?;
    for c in [&cert, &ca_cert] {
        if !c.validity().is_valid_at(when) {
            return Err(SigningError::Chain(format!(
                "'{}' was not valid at {} (valid {} to {})",
                c.subject(),
                humantime::format_rfc3339_seconds(at),
                c.validity().not_before,
                c.validity().not_after
            )));
        }
    }
    let found = identity_of_cert(certificate).map_err(|e| SigningError::Chain(e.to_string()))?;
    if &found != expected {
        return Err(SigningError::Chain(format!("the certificate is {found}, expected {expected}")));
    }
    let from = cert.validity().not_before.timestamp().max(ca_cert.validity().not_before.timestamp());
    let until = cert.validity().not_after.timestamp().min(ca_cert.validity().not_after.timestamp());
    Ok((from, until))
}

/// Certificate chains already checked: a peer's receipts all carry the same certificate, so each
/// costs one signature check instead of two. Holds a few hundred entries at most (it starts over
/// beyond that); a chain is only ever trusted at times inside the window it was checked for.
#[derive(Debug, Default)]
pub struct CheckedChains(std::sync::Mutex<std::collections::HashMap<[u8; 32], (i64, i64)>>);

/// Most chains [`CheckedChains`] remembers (a network has about 200 members).
const CHECKED_CHAINS: usize = 1024;

impl CheckedChains {
    /// [`check_certificate`], answered from memory for a chain already found good at a time in
    /// the same validity window.
    pub fn check(
        &self,
        certificate: &[u8],
        ca: &[u8],
        expected: &Identity,
        at: SystemTime,
    ) -> Result<(), SigningError> {
        let mut hasher = ring::digest::Context::new(&ring::digest::SHA256);
        for part in [certificate, ca, expected.to_string().as_bytes()] {
            hasher.update(&(part.len() as u64).to_be_bytes());
            hasher.update(part);
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(hasher.finish().as_ref());
        let seconds = at.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let seconds = i64::try_from(seconds).unwrap_or(i64::MAX);
        let window = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&key).copied();
        if window.is_some_and(|(from, until)| (from..=until).contains(&seconds)) {
            return Ok(());
        }
        let window = check_certificate_window(certificate, ca, expected, at)?;
        let mut known = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if known.len() >= CHECKED_CHAINS {
            known.clear();
        }
        known.insert(key, window);
        Ok(())
    }
}

/// Checks a receipt for `envelope` from the node `receiver`: it is for this envelope and digest,
/// its certificate is `receiver`'s from the network CA, and its signature verifies.
pub fn verify_receipt(
    receipt: &Receipt,
    envelope: &Envelope,
    receiver: &Identity,
    network_ca: &[u8],
) -> Result<(), SigningError> {
    verify_receipt_with(receipt, envelope, receiver, network_ca, None, None)
}

/// [`verify_receipt`], with the certificate chain answered from `chains` when it was checked
/// before, and a batch signature from `batches` (a sender checking a stream of receipts from the
/// same peer).
pub fn verify_receipt_with(
    receipt: &Receipt,
    envelope: &Envelope,
    receiver: &Identity,
    network_ca: &[u8],
    chains: Option<&CheckedChains>,
    batches: Option<&VerifiedBatches>,
) -> Result<(), SigningError> {
    verify_receipt_of_digest_with(
        receipt,
        &envelope.id,
        &envelope_digest(envelope),
        receiver,
        network_ca,
        chains,
        batches,
    )
}

/// [`verify_receipt`] for an envelope known only by its id and digest (its content was removed:
/// proof format v3).
pub fn verify_receipt_of_digest(
    receipt: &Receipt,
    envelope_id: &str,
    digest: &[u8; 32],
    receiver: &Identity,
    network_ca: &[u8],
) -> Result<(), SigningError> {
    verify_receipt_of_digest_with(receipt, envelope_id, digest, receiver, network_ca, None, None)
}

fn verify_receipt_of_digest_with(
    receipt: &Receipt,
    envelope_id: &str,
    digest: &[u8; 32],
    receiver: &Identity,
    network_ca: &[u8],
    chains: Option<&CheckedChains>,
    batches: Option<&VerifiedBatches>,
) -> Result<(), SigningError> {
    let digest = *digest;
    if receipt.envelope_id != envelope_id {
        return Err(SigningError::Mismatch(format!(
            "it is for {}, not {}",
            receipt.envelope_id, envelope_id
        )));
    }
    let Identity::Node { code, .. } = receiver else {
        return Err(SigningError::Mismatch(format!("{receiver} is not a node")));
    };
    if receipt.receiver != code.as_str() {
        return Err(SigningError::Mismatch(format!("it names receiver '{}', not {code}", receipt.receiver)));
    }
    if receipt.envelope_sha256 != digest {
        return Err(SigningError::Mismatch(format!(
            "it is for an envelope with SHA-256 {}, but this envelope's is {}",
            hex::encode(&receipt.envelope_sha256),
            hex::encode(digest)
        )));
    }
    let received_at =
        receipt.received_at.ok_or_else(|| SigningError::Mismatch("it has no received_at".into()))?;
    let at = crate::domain::timestamp::to_system(&received_at);
    match chains {
        Some(chains) => chains.check(&receipt.receiver_certificate, network_ca, receiver, at)?,
        None => check_certificate(&receipt.receiver_certificate, network_ca, receiver, at)?,
    }
    let (id, me) = (&receipt.envelope_id, &receipt.receiver);
    let inclusion = receipt.receipt_batch.as_ref();
    let covered = covered_bytes(
        || receipt_signed_bytes(&digest, id, me, &received_at),
        RECEIPT_BATCH_CONTEXT,
        &receipt_leaf(&digest, id, me, &received_at),
        inclusion,
    )?;
    verify_covered(&receipt.receiver_certificate, &covered, &receipt.signature, inclusion.and(batches))
}

/// Lower-case hexadecimal: the `hex` crate's encoder under the name callers outside the crate
/// (tests that forge proof files) already use; inside the crate, call `hex::encode`.
pub fn hex(bytes: &[u8]) -> String {
    ::hex::encode(bytes)
}

/// Of several CA certificates (a CA file during a rotation holds the old and the new one), the
/// one that issued `certificate`: same subject as its issuer and a signature that verifies. `None`
/// when none did.
pub fn issuer_among<'a>(certificate: &[u8], cas: &'a [Vec<u8>]) -> Option<&'a [u8]> {
    let cert = parse(certificate).ok()?;
    cas.iter().map(Vec::as_slice).find(|ca| {
        parse(ca).is_ok_and(|ca| {
            ca.subject() == cert.issuer() && cert.verify_signature(Some(ca.public_key())).is_ok()
        })
    })
}

/// A node's signing key with its certificate, and the network CA certificates it trusts.
pub struct Signer {
    key: EcdsaKeyPair,
    rng: SystemRandom,
    certificate: Vec<u8>,
    network_cas: Vec<Vec<u8>>,
}

impl Signer {
    /// Loads the node key (PKCS#8 ECDSA P-256), checks it belongs to the node certificate (the
    /// first in `cert`), and reads the network CA certificates (all of `network_ca`).
    pub fn load(cert: &Path, key: &Path, network_ca: &Path) -> Result<Self, SigningError> {
        let file =
            |path: &Path, message: String| SigningError::File { path: path.display().to_string(), message };
        let all = |path: &Path| -> Result<Vec<Vec<u8>>, SigningError> {
            let certs = tls::load_certs(path).map_err(|e| file(path, e.to_string()))?;
            Ok(certs.iter().map(|c| c.to_vec()).collect())
        };
        // load_certs refuses an empty file, so there is a first certificate.
        let certificate = all(cert)?.into_iter().next().unwrap_or_default();
        let network_cas = all(network_ca)?;
        let rng = SystemRandom::new();
        let key_pair = match tls::load_key(key).map_err(|e| file(key, e.to_string()))? {
            PrivateKeyDer::Pkcs8(pkcs8) => {
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.secret_pkcs8_der(), &rng)
                    .map_err(|e| file(key, format!("not a usable ECDSA P-256 key ({e})")))?
            }
            _ => {
                return Err(file(
                    key,
                    "envelopes are signed with the node key, which must be PKCS#8 ECDSA P-256 \
                     (convert with `openssl pkcs8 -topk8 -nocrypt`)"
                        .into(),
                ));
            }
        };
        let parsed = parse(&certificate).map_err(|e| file(cert, e.to_string()))?;
        let point = p256_key(&parsed).map_err(|e| file(cert, e.to_string()))?;
        if point != key_pair.public_key().as_ref() {
            return Err(file(key, format!("this key does not belong to the certificate {}", cert.display())));
        }
        Ok(Self { key: key_pair, rng, certificate, network_cas })
    }

    /// This node's certificate (DER): the key that signs.
    pub fn certificate(&self) -> &[u8] {
        &self.certificate
    }

    /// The trusted network CA certificate (DER) that issued `certificate`, or the first one
    /// (whose check then says why it does not chain).
    pub fn network_ca_of(&self, certificate: &[u8]) -> &[u8] {
        match self.network_cas.as_slice() {
            // With one CA the answer is that CA whether or not it issued the certificate (its
            // check then says why not), so no X.509 signature is verified here: this runs for
            // every receipt and was 14 % of the sender's CPU in the receipt phases.
            [only] => only,
            cas => {
                issuer_among(certificate, cas).or_else(|| cas.first().map(Vec::as_slice)).unwrap_or_default()
            }
        }
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SigningError> {
        self.key
            .sign(&self.rng, message)
            .map(|s| s.as_ref().to_vec())
            .map_err(|_| SigningError::Signature("the system random generator failed".into()))
    }

    /// Signs `body` after `context`, one of the other domain-separation prefixes (audit heads,
    /// backups): `trust::witness` builds the bodies, so no caller can sign arbitrary bytes.
    pub(crate) fn sign_in_context(&self, context: &[u8], body: &[u8]) -> Result<Vec<u8>, SigningError> {
        self.sign(&[context, body].concat())
    }

    /// Sets `origin_signature` over the envelope as it is now, alone (format 1; any earlier
    /// signature and batch inclusion are replaced).
    pub fn sign_envelope(&self, envelope: &mut Envelope) -> Result<(), SigningError> {
        envelope.origin_batch = None;
        let digest = envelope_digest(envelope);
        envelope.origin_signature = self.sign(&envelope_signed_bytes(&digest))?;
        Ok(())
    }

    /// Signs `envelopes` together: one alone in format 1; two or more with one signature over
    /// their Merkle tree (format 2), each keeping its inclusion path in `origin_batch`.
    pub fn sign_envelopes(&self, envelopes: &mut [Envelope]) -> Result<(), SigningError> {
        if let [envelope] = envelopes {
            return self.sign_envelope(envelope);
        }
        let digests: Vec<[u8; 32]> = envelopes.iter().map(envelope_digest).collect();
        let leaves: Vec<&[u8]> = digests.iter().map(<[u8; 32]>::as_slice).collect();
        let (signature, inclusions) = self.sign_batch(ENVELOPE_BATCH_CONTEXT, &leaves)?;
        for (envelope, inclusion) in envelopes.iter_mut().zip(inclusions) {
            envelope.origin_signature = signature.clone();
            envelope.origin_batch = Some(inclusion);
        }
        Ok(())
    }

    /// One signature over the Merkle tree of `leaves` (unhashed leaf data), and each leaf's
    /// inclusion.
    fn sign_batch(
        &self,
        context: &[u8],
        leaves: &[&[u8]],
    ) -> Result<(Vec<u8>, Vec<BatchInclusion>), SigningError> {
        let hashes: Vec<Hash> = leaves.iter().map(|leaf| merkle::leaf_hash(leaf)).collect();
        let Some((root, paths)) = merkle::tree(&hashes) else {
            return Ok((Vec::new(), Vec::new()));
        };
        let size = hashes.len() as u64;
        let signature = self.sign(&batch_signed_bytes(context, size, &root))?;
        let inclusions = paths
            .into_iter()
            .enumerate()
            .map(|(index, path)| BatchInclusion {
                format: BATCH_FORMAT,
                leaf_index: index as u64,
                tree_size: size,
                audit_path: path.iter().map(|step| step.to_vec()).collect(),
            })
            .collect();
        Ok((signature, inclusions))
    }

    /// A signed receipt, from `receiver` (this node), for `envelope` stored at `received_at`.
    pub fn receipt(
        &self,
        envelope: &Envelope,
        receiver: &str,
        received_at: Timestamp,
    ) -> Result<Receipt, SigningError> {
        let digest = envelope_digest(envelope);
        let mut receipts = self.receipts(&[(&envelope.id, digest)], receiver, received_at, false)?;
        // One member in, one receipt out.
        Ok(receipts.pop().unwrap_or_default())
    }

    /// Signed receipts, from `receiver` (this node), for envelopes (id and digest) stored at
    /// `received_at`: one signature each (format 1), or, with `batch` and two or more, one
    /// signature over their Merkle tree (format 2).
    pub fn receipts(
        &self,
        envelopes: &[(&str, [u8; 32])],
        receiver: &str,
        received_at: Timestamp,
        batch: bool,
    ) -> Result<Vec<Receipt>, SigningError> {
        let receipt = |(id, digest): &(&str, [u8; 32]), signature, receipt_batch| Receipt {
            envelope_id: (*id).to_owned(),
            receiver: receiver.to_owned(),
            received_at: Some(received_at),
            duplicate: false,
            envelope_sha256: digest.to_vec(),
            signature,
            receiver_certificate: self.certificate.clone(),
            receipt_batch,
        };
        if !batch || envelopes.len() < 2 {
            return envelopes
                .iter()
                .map(|member @ (id, digest)| {
                    let signature = self.sign(&receipt_signed_bytes(digest, id, receiver, &received_at))?;
                    Ok(receipt(member, signature, None))
                })
                .collect();
        }
        let leaves: Vec<Vec<u8>> =
            envelopes.iter().map(|(id, digest)| receipt_leaf(digest, id, receiver, &received_at)).collect();
        let leaves: Vec<&[u8]> = leaves.iter().map(Vec::as_slice).collect();
        let (signature, inclusions) = self.sign_batch(RECEIPT_BATCH_CONTEXT, &leaves)?;
        Ok(envelopes
            .iter()
            .zip(inclusions)
            .map(|(member, inclusion)| receipt(member, signature.clone(), Some(inclusion)))
            .collect())
    }
}

/// The node's current signer, replaced when the node certificate and key are reloaded (they are
/// the same files as the TLS ones, so signatures always match the certificate peers see).
pub struct LiveSigner(std::sync::RwLock<std::sync::Arc<Signer>>);

impl LiveSigner {
    /// Starts with `signer`.
    pub fn new(signer: Signer) -> Self {
        Self(std::sync::RwLock::new(std::sync::Arc::new(signer)))
    }

    /// The signer to use now.
    pub fn current(&self) -> std::sync::Arc<Signer> {
        // A poisoned lock only means a reload panicked half-way; the Arc inside is whole.
        std::sync::Arc::clone(&self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Loads the files of `tls` again; on error the current signer stays.
    pub fn reload(&self, tls: &crate::config::TlsConfig) -> Result<(), SigningError> {
        let signer = Signer::load(&tls.cert, &tls.key, &tls.network_ca)?;
        *self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner) = std::sync::Arc::new(signer);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::identity::NodeCode;
    use crate::proto::{EnvelopeKind, Precedence};
    use crate::trust::pki::CertificateAuthority;

    fn code(text: &str) -> NodeCode {
        text.parse().unwrap()
    }

    fn node(network: &str, text: &str) -> Identity {
        Identity::Node { network: network.into(), code: code(text) }
    }

    fn envelope() -> Envelope {
        Envelope {
            id: "0190f3c4-0000-7000-8000-000000000001".into(),
            origin: "VN".into(),
            destination: "FR".into(),
            kind: EnvelopeKind::Request as i32,
            precedence: Precedence::Flash as i32,
            subject: "Preserve".into(),
            body: "the logs".into(),
            created_at: Some(Timestamp { seconds: 1_764_000_000, nanos: 5 }),
            ..Default::default()
        }
    }

    /// A signer for `code` in a fresh network, with its CA (DER).
    fn new_signer(code_text: &str) -> (Signer, Vec<u8>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::generate("net CA", 10).unwrap();
        let issued = ca.issue_node("net", code(code_text), &[], 10).unwrap();
        let (cert, key, ca_path) =
            (dir.path().join("c.pem"), dir.path().join("k.pem"), dir.path().join("ca.pem"));
        std::fs::write(&cert, &issued.cert_pem).unwrap();
        std::fs::write(&key, &issued.key_pem).unwrap();
        std::fs::write(&ca_path, ca.cert_pem()).unwrap();
        let signer = Signer::load(&cert, &key, &ca_path).unwrap();
        let ca_der = signer.network_ca_of(signer.certificate()).to_vec();
        (signer, ca_der, dir)
    }

    #[test]
    fn the_canonical_envelope_encoding_ignores_the_signature_and_is_stable() {
        let mut signed = envelope();
        let unsigned = canonical_envelope(&signed);
        signed.origin_signature = vec![1, 2, 3];
        assert_eq!(canonical_envelope(&signed), unsigned);
        // Decoding and encoding again gives the same bytes (what a receiver recomputes).
        let decoded = Envelope::decode(signed.encode_to_vec().as_slice()).unwrap();
        assert_eq!(canonical_envelope(&decoded), unsigned);
        // Field 1 (id) first, as a length-delimited string: 0x0a, length, bytes.
        assert_eq!(&unsigned[..2], &[0x0a, 36]);
        assert_eq!(envelope_digest(&signed), sha256(&unsigned));
        assert!(envelope_signed_bytes(&[7; 32]).starts_with(b"hanoi247-envelope-v1\n"));
    }

    #[test]
    fn the_receipt_encoding_is_the_documented_layout() {
        let at = Timestamp { seconds: 0x0102_0304_0506_0708, nanos: 0x0a0b_0c0d };
        let bytes = receipt_signed_bytes(&[9; 32], "id", "FR", &at);
        let mut expected = b"hanoi247-receipt-v1\n".to_vec();
        expected.extend_from_slice(&[9; 32]);
        expected.extend_from_slice(&[0, 2, b'i', b'd', 0, 2, b'F', b'R']);
        expected.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8, 0x0a, 0x0b, 0x0c, 0x0d]);
        assert_eq!(bytes, expected);
    }

    #[test]
    fn a_signed_envelope_verifies_and_any_changed_byte_does_not() {
        let (signer, _, _dir) = new_signer("VN");
        let mut signed = envelope();
        signer.sign_envelope(&mut signed).unwrap();
        verify_envelope(&signed, signer.certificate()).unwrap();

        let mut tampered = signed.clone();
        tampered.body.push('!');
        let error = verify_envelope(&tampered, signer.certificate()).unwrap_err();
        assert!(error.to_string().contains("does not verify"), "{error}");

        let mut bad_signature = signed.clone();
        let last = bad_signature.origin_signature.len() - 1;
        bad_signature.origin_signature[last] ^= 1;
        assert!(matches!(
            verify_envelope(&bad_signature, signer.certificate()),
            Err(SigningError::Signature(_))
        ));

        let mut unsigned = signed.clone();
        unsigned.origin_signature.clear();
        let error = verify_envelope(&unsigned, signer.certificate()).unwrap_err();
        assert!(error.to_string().contains("missing"), "{error}");

        // Another node's key does not pass for VN's.
        let (other, _, _other_dir) = new_signer("VN");
        assert!(verify_envelope(&signed, other.certificate()).is_err());
    }

    #[test]
    fn a_receipt_verifies_against_the_receiver_and_the_network_ca_only() {
        let (fr, ca, _dir) = new_signer("FR");
        let mut signed = envelope();
        signed.origin_signature = vec![1];
        let at = Timestamp { seconds: std::time::UNIX_EPOCH.elapsed().unwrap().as_secs() as i64, nanos: 42 };
        let receipt = fr.receipt(&signed, "FR", at).unwrap();
        verify_receipt(&receipt, &signed, &node("net", "FR"), &ca).unwrap();

        // Wrong receiver identity, other CA, changed time, changed envelope: all refused.
        assert!(verify_receipt(&receipt, &signed, &node("net", "DE"), &ca).is_err());
        let (_, other_ca, _other) = new_signer("FR");
        let error = verify_receipt(&receipt, &signed, &node("net", "FR"), &other_ca).unwrap_err();
        assert!(matches!(error, SigningError::Chain(_)), "{error}");
        let mut later = receipt.clone();
        later.received_at = Some(Timestamp { nanos: 43, ..at });
        assert!(matches!(
            verify_receipt(&later, &signed, &node("net", "FR"), &ca),
            Err(SigningError::Signature(_))
        ));
        let mut other_envelope = signed.clone();
        other_envelope.subject = "Other".into();
        assert!(matches!(
            verify_receipt(&receipt, &other_envelope, &node("net", "FR"), &ca),
            Err(SigningError::Mismatch(_))
        ));
    }

    #[test]
    fn a_chain_remembered_as_good_is_good_only_for_the_same_bytes_identity_and_window() {
        let (fr, ca, _dir) = new_signer("FR");
        let chains = CheckedChains::default();
        let now = std::time::SystemTime::now();
        let fr_id = node("net", "FR");
        chains.check(fr.certificate(), &ca, &fr_id, now).unwrap();
        // Remembered: the same chain at another time inside its validity.
        chains.check(fr.certificate(), &ca, &fr_id, now + std::time::Duration::from_secs(60)).unwrap();
        assert_eq!(chains.0.lock().unwrap().len(), 1);
        // Never extended to another identity, another CA, or a time outside the window.
        assert!(chains.check(fr.certificate(), &ca, &node("net", "DE"), now).is_err());
        let (_, other_ca, _other) = new_signer("FR");
        assert!(matches!(
            chains.check(fr.certificate(), &other_ca, &fr_id, now),
            Err(SigningError::Chain(_))
        ));
        let long_ago = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        let error = chains.check(fr.certificate(), &ca, &fr_id, long_ago).unwrap_err();
        assert!(error.to_string().contains("was not valid at"), "{error}");
        // A receipt checked through it verifies exactly as without it.
        let mut signed = envelope();
        signed.origin_signature = vec![1];
        let at = Timestamp {
            seconds: now.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64,
            nanos: 0,
        };
        let receipt = fr.receipt(&signed, "FR", at).unwrap();
        verify_receipt_with(&receipt, &signed, &fr_id, &ca, Some(&chains), None).unwrap();
        let mut forged = receipt.clone();
        forged.received_at = Some(Timestamp { nanos: 1, ..at });
        assert!(matches!(
            verify_receipt_with(&forged, &signed, &fr_id, &ca, Some(&chains), None),
            Err(SigningError::Signature(_))
        ));
    }

    #[test]
    fn during_a_ca_rotation_each_certificate_is_checked_against_its_own_issuer() {
        // Two CAs with the same name (a re-keyed CA), both in the node's network CA file.
        let (old, new) = (
            CertificateAuthority::generate("net CA", 10).unwrap(),
            CertificateAuthority::generate("net CA", 10).unwrap(),
        );
        let der = |pem: &str| {
            use rustls::pki_types::pem::PemObject as _;
            rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap().to_vec()
        };
        let (old_der, new_der) = (der(old.cert_pem()), der(new.cert_pem()));
        let under_new = der(&new.issue_node("net", code("FR"), &[], 10).unwrap().cert_pem);
        let cas = vec![old_der.clone(), new_der.clone()];
        assert_eq!(issuer_among(&under_new, &cas), Some(new_der.as_slice()));
        assert_eq!(issuer_among(&under_new, &cas[..1]), None);
        check_certificate(&under_new, &new_der, &node("net", "FR"), std::time::SystemTime::now()).unwrap();
        assert!(
            check_certificate(&under_new, &old_der, &node("net", "FR"), std::time::SystemTime::now())
                .is_err()
        );
    }

    fn envelopes(n: usize) -> Vec<Envelope> {
        (0..n).map(|i| Envelope { id: format!("0190f3c4-0000-7000-8000-{i:012}"), ..envelope() }).collect()
    }

    #[test]
    fn a_batch_is_signed_once_and_every_member_verifies_alone() {
        let (signer, ca, _dir) = new_signer("VN");
        let mut single = envelopes(1);
        signer.sign_envelopes(&mut single).unwrap();
        assert_eq!(single[0].origin_batch, None, "a batch of one is signed in format 1");
        verify_envelope(&single[0], signer.certificate()).unwrap();

        let mut batch = envelopes(5);
        signer.sign_envelopes(&mut batch).unwrap();
        let batches = VerifiedBatches::default();
        for (i, member) in batch.iter().enumerate() {
            let inclusion = member.origin_batch.as_ref().unwrap();
            assert_eq!((inclusion.leaf_index, inclusion.tree_size, inclusion.format), (i as u64, 5, 2));
            assert_eq!(member.origin_signature, batch[0].origin_signature, "one signature");
            verify_envelope(member, signer.certificate()).unwrap();
            verify_envelope_with(member, signer.certificate(), Some(&batches)).unwrap();
            // The digest leaves the batch inclusion out, like the signature.
            let mut bare = member.clone();
            bare.origin_batch = None;
            assert_eq!(envelope_digest(&bare), envelope_digest(member));
        }
        assert_eq!(batches.0.lock().unwrap().len(), 1, "the root was verified once");

        // A changed member, a bent path, a moved index, another format: refused, also when the
        // root was verified before.
        let mut changed = batch[2].clone();
        changed.body.push('!');
        assert!(verify_envelope_with(&changed, signer.certificate(), Some(&batches)).is_err());
        let mut bent = batch[2].clone();
        bent.origin_batch.as_mut().unwrap().audit_path[0][0] ^= 1;
        assert!(matches!(
            verify_envelope_with(&bent, signer.certificate(), Some(&batches)),
            Err(SigningError::Signature(_))
        ));
        let mut moved = batch[2].clone();
        moved.origin_batch.as_mut().unwrap().leaf_index = 3;
        assert!(verify_envelope_with(&moved, signer.certificate(), Some(&batches)).is_err());
        let mut short = batch[2].clone();
        short.origin_batch.as_mut().unwrap().audit_path.pop();
        assert!(matches!(verify_envelope(&short, signer.certificate()), Err(SigningError::Inclusion(_))));
        let mut future = batch[2].clone();
        future.origin_batch.as_mut().unwrap().format = 3;
        let error = verify_envelope(&future, signer.certificate()).unwrap_err();
        assert!(error.to_string().contains("format 3"), "{error}");
        // A batch signature never passes as a single one, nor the other way round.
        let mut unbatched = batch[2].clone();
        unbatched.origin_batch = None;
        assert!(verify_envelope(&unbatched, signer.certificate()).is_err());
        // Signing alone again (a downgraded peer) drops the inclusion.
        let mut alone = batch[2].clone();
        signer.sign_envelope(&mut alone).unwrap();
        assert_eq!(alone.origin_batch, None);
        verify_envelope(&alone, signer.certificate()).unwrap();
        let _ = ca;
    }

    #[test]
    fn batch_receipts_verify_each_and_single_ones_stay_format_1() {
        let (fr, ca, _dir) = new_signer("FR");
        let batch = envelopes(3);
        let members: Vec<(&str, [u8; 32])> =
            batch.iter().map(|e| (e.id.as_str(), envelope_digest(e))).collect();
        let at = Timestamp { seconds: std::time::UNIX_EPOCH.elapsed().unwrap().as_secs() as i64, nanos: 7 };
        let receipts = fr.receipts(&members, "FR", at, true).unwrap();
        let batches = VerifiedBatches::default();
        for (receipt, envelope) in receipts.iter().zip(&batch) {
            assert!(receipt.receipt_batch.is_some());
            verify_receipt(receipt, envelope, &node("net", "FR"), &ca).unwrap();
            verify_receipt_with(receipt, envelope, &node("net", "FR"), &ca, None, Some(&batches)).unwrap();
        }
        assert_eq!(batches.0.lock().unwrap().len(), 1);
        // A batch receipt for another member of the batch does not pass for this one.
        let mut swapped = receipts[0].clone();
        swapped.receipt_batch = receipts[1].receipt_batch.clone();
        assert!(verify_receipt(&swapped, &batch[0], &node("net", "FR"), &ca).is_err());
        let mut later = receipts[1].clone();
        later.received_at = Some(Timestamp { nanos: 8, ..at });
        assert!(
            verify_receipt_with(&later, &batch[1], &node("net", "FR"), &ca, None, Some(&batches)).is_err()
        );
        // Without `batch`, or alone, each receipt is signed on its own.
        for receipt in fr
            .receipts(&members, "FR", at, false)
            .unwrap()
            .iter()
            .chain(&fr.receipts(&members[..1], "FR", at, true).unwrap())
        {
            assert_eq!(receipt.receipt_batch, None);
        }
    }

    #[test]
    fn a_key_that_does_not_belong_to_the_certificate_is_refused() {
        let (_, _, dir) = new_signer("VN");
        let ca = CertificateAuthority::generate("net CA", 10).unwrap();
        let other = ca.issue_node("net", code("VN"), &[], 10).unwrap();
        let key = dir.path().join("other.pem");
        std::fs::write(&key, &other.key_pem).unwrap();
        let error = Signer::load(&dir.path().join("c.pem"), &key, &dir.path().join("ca.pem")).err().unwrap();
        assert!(error.to_string().contains("does not belong"), "{error}");
    }
}
