//! Proof files: one message's evidence of origin and of receipt as a self-contained JSON file
//! (`hanoi247 show ID --proof FILE`), and checking such a file offline (`hanoi247 verify FILE`).
//!
//! A proof file (`"format": "hanoi247-proof-v1"`) holds the envelope's canonical encoding
//! (base64; what the origin signed) with its SHA-256 and a readable form, the origin's signature
//! and certificate chain, and, once delivered, the receiver's signed receipt and certificate
//! chain. Chains are PEM, the node certificate first and the network CA last. The encodings are
//! those of [`crate::trust::signing`].
//!
//! Format `hanoi247-proof-v2` is v1 plus, where a signature covers a batch (signature format 2),
//! a `batch` part beside it: the member's leaf hash, index, the tree's size, the inclusion path
//! and the signed root, all hex. The file still stands alone: the path leads from this
//! envelope's (or receipt's) leaf to the root the signature covers. A file whose signatures are
//! both single is written as v1, and v1 files verify as they always did. A failed check names
//! the part: the leaf, a step of the path, the root, the signature or the certificate.
//!
//! Format `hanoi247-proof-v3` is for a message whose content the node removed (retention of a
//! closed case): the bytes the origin signed are gone, so the file carries their digest
//! (`envelope.sha256`) instead of `canonical_base64`, and a `removed` part: when, which fields,
//! and the envelope as the node keeps it (`kept_base64`, protobuf; `readable` shows it). The
//! signatures cover the digest (the origin's, alone or through the batch path; the receipt's,
//! which also binds the id), so they verify without the content; the kept fields other than the
//! id are the node's word, not signed, and the output says so. Whoever holds the content (an
//! earlier v1/v2 file, the peer) can check it against the digest. v1 and v2 files verify as before.
//!
//! **Boundary:** pure: builds from a `GetProofResponse` and verifies bytes; never talks to a node.

use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use prost::Message as _;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use serde_json::json;

use crate::domain::identity::{Identity, NodeCode};
use crate::domain::names::ShortName as _;
use crate::proto::{BatchInclusion, Envelope, GetProofResponse, Receipt};
use crate::trust::{merkle, signing};

/// The `format` of proof files whose signatures each cover one envelope or receipt.
pub const FORMAT: &str = "hanoi247-proof-v1";
/// The `format` of proof files with a signature over a batch (a `batch` part beside it).
pub const FORMAT_V2: &str = "hanoi247-proof-v2";
/// The `format` of proof files of a message whose content was removed (digest, no bytes).
pub const FORMAT_V3: &str = "hanoi247-proof-v3";

/// A proof file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProofFile {
    /// [`FORMAT`], [`FORMAT_V2`] when a signature covers a batch, [`FORMAT_V3`] when the
    /// content was removed.
    pub format: String,
    /// The network name in both nodes' `spiffe://<network>/node/<CC>` identities.
    pub network: String,
    /// The envelope.
    pub envelope: EnvelopePart,
    /// The origin's signature over it.
    pub origin: OriginPart,
    /// The receiver's signed receipt; absent when the message was not delivered (yet).
    pub receipt: Option<ReceiptPart>,
}

/// The envelope as signed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EnvelopePart {
    /// The envelope id.
    pub id: String,
    /// SHA-256 of the canonical encoding (hex): the envelope's digest.
    pub sha256: String,
    /// The canonical encoding (base64): what the origin signed. Absent in v3 (removed).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub canonical_base64: String,
    /// The same envelope for people (as `show --json` prints it); must match the bytes (v3: the
    /// kept envelope).
    pub readable: Value,
    /// v3 only: the content was removed; what is left of the envelope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<RemovedPart>,
}

/// What a node removed from a closed case's envelope, and what it kept (proof format v3).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RemovedPart {
    /// When the content was removed (RFC 3339).
    pub at: String,
    /// The fields removed (proto names, as `Message.content_removed`).
    pub fields: Vec<String>,
    /// The envelope as the node keeps it (protobuf, base64): not what was signed, and not
    /// covered by any signature but for its id (bound by the receipt).
    pub kept_base64: String,
}

/// The origin's signature.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OriginPart {
    /// The origin's node code.
    pub node: String,
    /// ECDSA P-256 / SHA-256 signature (ASN.1 DER, base64) over "hanoi247-envelope-v1\n" || digest.
    pub signature_base64: String,
    /// PEM certificates: the origin's node certificate, then the network CA.
    pub certificate_chain: Vec<String>,
    /// Where the envelope sits in the batch the signature covers (v2; absent: signed alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<BatchPart>,
}

/// A member's place in a batch that one signature covers (proof format v2), all hashes hex.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BatchPart {
    /// The member's leaf hash, SHA-256(0x00 || leaf data): the leaf data is the envelope's digest
    /// for the origin, "hanoi247-receipt-leaf-v2\n" || the receipt fields for the receipt.
    pub leaf: String,
    /// The leaf's index in the tree, from 0.
    pub leaf_index: u64,
    /// How many members the tree has.
    pub tree_size: u64,
    /// Sibling hashes from the leaf up to the root (RFC 9162 §2.1.3).
    pub audit_path: Vec<String>,
    /// The root the signature covers, over "hanoi247-…-batch-v2\n" || tree_size (u64 BE) || root.
    pub root: String,
}

/// The receiver's signed receipt.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReceiptPart {
    /// The receiving node's code.
    pub receiver: String,
    /// The envelope id the receipt is for.
    pub envelope_id: String,
    /// The digest of the envelope the receiver stored (hex).
    pub envelope_sha256: String,
    /// When the receiver stored the envelope durably (RFC 3339, nanoseconds: exactly as signed).
    pub received_at: String,
    /// ECDSA P-256 / SHA-256 signature (ASN.1 DER, base64) over the receipt's canonical bytes.
    pub signature_base64: String,
    /// PEM certificates: the receiver's node certificate, then the network CA.
    pub certificate_chain: Vec<String>,
    /// Where the receipt sits in the batch of receipts the signature covers (v2; absent: alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<BatchPart>,
}

/// A proof file that cannot be made, read or does not verify.
#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    /// One part of the proof is malformed or does not check out.
    #[error("{part}: {message}")]
    Invalid {
        /// The part of the file, e.g. `receipt.signature_base64`.
        part: String,
        /// What is wrong.
        message: String,
    },
    /// The file is not a proof file (JSON).
    #[error("not a hanoi247 proof file: {0}")]
    Json(#[from] serde_json::Error),
}

fn invalid(part: &str, message: impl ToString) -> ProofError {
    ProofError::Invalid { part: part.to_owned(), message: message.to_string() }
}

/// A DER certificate as PEM.
pub fn pem(der: &[u8]) -> String {
    let body = BASE64.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// A time exactly as signed (nanoseconds), RFC 3339 UTC.
fn exact_time(timestamp: &prost_types::Timestamp) -> String {
    humantime::format_rfc3339_nanos(crate::domain::timestamp::to_system(timestamp)).to_string()
}

/// The proof file for what a node's `GetProof` returned.
pub fn build(response: &GetProofResponse) -> Result<ProofFile, ProofError> {
    let removed = response.envelope_canonical.is_empty() && !response.envelope_sha256.is_empty();
    let (envelope, digest) = if removed {
        let digest = merkle::Hash::try_from(response.envelope_sha256.as_slice()).map_err(|_| {
            invalid("envelope_sha256", format!("{} bytes, not 32", response.envelope_sha256.len()))
        })?;
        (response.envelope_kept.clone().unwrap_or_default(), digest)
    } else {
        let envelope = Envelope::decode(response.envelope_canonical.as_slice())
            .map_err(|e| invalid("envelope_canonical", format!("not an envelope: {e}")))?;
        (envelope, signing::sha256(&response.envelope_canonical))
    };
    let ca = pem(&response.network_ca_certificate);
    let receiver_ca = match response.receiver_network_ca_certificate.as_slice() {
        [] => ca.clone(),
        der => pem(der),
    };
    let receipt = match response.receipt.as_ref() {
        None => None,
        Some(r) => {
            let batch = match &r.receipt_batch {
                None => None,
                Some(inclusion) => {
                    let at = r.received_at.unwrap_or_default();
                    let leaf = signing::receipt_leaf(&r.envelope_sha256, &r.envelope_id, &r.receiver, &at);
                    Some(batch_part("receipt.receipt_batch", &leaf, inclusion)?)
                }
            };
            Some(ReceiptPart {
                receiver: r.receiver.clone(),
                envelope_id: r.envelope_id.clone(),
                envelope_sha256: hex::encode(&r.envelope_sha256),
                received_at: r.received_at.as_ref().map(exact_time).unwrap_or_default(),
                signature_base64: BASE64.encode(&r.signature),
                certificate_chain: vec![pem(&r.receiver_certificate), receiver_ca],
                batch,
            })
        }
    };
    let origin_batch = match &response.origin_batch {
        None => None,
        Some(inclusion) => Some(batch_part("origin_batch", &digest, inclusion)?),
    };
    let batched = origin_batch.is_some() || receipt.as_ref().is_some_and(|r| r.batch.is_some());
    let format = match (removed, batched) {
        (true, _) => FORMAT_V3,
        (false, true) => FORMAT_V2,
        (false, false) => FORMAT,
    };
    let removed = removed.then(|| RemovedPart {
        at: response.content_removed_at.as_ref().map(exact_time).unwrap_or_default(),
        fields: response.content_removed.clone(),
        kept_base64: BASE64.encode(envelope.encode_to_vec()),
    });
    Ok(ProofFile {
        format: format.to_owned(),
        network: response.network.clone(),
        envelope: EnvelopePart {
            id: envelope.id.clone(),
            sha256: hex::encode(digest),
            canonical_base64: BASE64.encode(&response.envelope_canonical),
            readable: readable_envelope(&envelope),
            removed,
        },
        origin: OriginPart {
            node: envelope.origin.clone(),
            signature_base64: BASE64.encode(&response.origin_signature),
            certificate_chain: vec![pem(&response.origin_certificate), ca],
            batch: origin_batch,
        },
        receipt,
    })
}

/// The `batch` part of a proof file for a member with `leaf_data` and its `inclusion`.
fn batch_part(part: &str, leaf_data: &[u8], inclusion: &BatchInclusion) -> Result<BatchPart, ProofError> {
    let root = signing::inclusion_root(leaf_data, inclusion).map_err(|e| invalid(part, e))?;
    Ok(BatchPart {
        leaf: hex::encode(merkle::leaf_hash(leaf_data)),
        leaf_index: inclusion.leaf_index,
        tree_size: inclusion.tree_size,
        audit_path: inclusion.audit_path.iter().map(hex::encode).collect(),
        root: hex::encode(root),
    })
}

/// The inclusion a `batch` part states (`part` names it in errors).
fn inclusion_of(part: &str, batch: &BatchPart) -> Result<BatchInclusion, ProofError> {
    let audit_path = batch
        .audit_path
        .iter()
        .enumerate()
        .map(|(i, step)| hash32(&format!("{part}.audit_path[{i}]"), step).map(|h| h.to_vec()))
        .collect::<Result<_, _>>()?;
    Ok(BatchInclusion {
        format: signing::BATCH_FORMAT,
        leaf_index: batch.leaf_index,
        tree_size: batch.tree_size,
        audit_path,
    })
}

/// A 32-byte hash from hex, or an error naming `part`.
fn hash32(part: &str, text: &str) -> Result<merkle::Hash, ProofError> {
    let bytes = hex_decode(part, text)?;
    merkle::Hash::try_from(bytes.as_slice())
        .map_err(|_| invalid(part, format!("{} bytes, not 32", bytes.len())))
}

/// Checks a batch signature of a proof file and names the part that fails: `part` is `origin`
/// or `receipt`, `leaf_data` what the member's leaf must hold, `context` the signed prefix.
/// Order: the stated leaf must be this member's; the path must lead somewhere; then the signature
/// is tried over the stated root and over the root the path leads to, which tells a bent path
/// (the stated root verifies) from a replaced root (the path's root verifies) from a bad
/// signature (neither does).
fn verify_batch(
    part: &str,
    batch: &BatchPart,
    leaf_data: &[u8],
    context: &[u8],
    certificate: &[u8],
    signature: &[u8],
) -> Result<(), ProofError> {
    let leaf = merkle::leaf_hash(leaf_data);
    if hash32(&format!("{part}.batch.leaf"), &batch.leaf)? != leaf {
        return Err(invalid(
            &format!("{part}.batch.leaf"),
            format!(
                "{} is not the leaf of this {} ({})",
                batch.leaf,
                if part == "origin" { "envelope" } else { "receipt" },
                hex::encode(leaf)
            ),
        ));
    }
    let stated = hash32(&format!("{part}.batch.root"), &batch.root)?;
    let inclusion = inclusion_of(&format!("{part}.batch"), batch)?;
    let path: Vec<merkle::Hash> =
        inclusion.audit_path.iter().filter_map(|step| merkle::Hash::try_from(step.as_slice()).ok()).collect();
    let reached = merkle::root_from_path(&leaf, batch.leaf_index, batch.tree_size, &path).map_err(|e| {
        let field = match e {
            merkle::PathError::IndexOutOfRange { .. } => "leaf_index",
            merkle::PathError::WrongLength { .. } => "audit_path",
        };
        invalid(&format!("{part}.batch.{field}"), e)
    })?;
    let verifies = |root: &merkle::Hash| {
        signing::verify_with_certificate(
            certificate,
            &signing::batch_signed_bytes(context, batch.tree_size, root),
            signature,
        )
    };
    let over_stated = verifies(&stated);
    if reached == stated {
        return over_stated
            .map_err(|e| invalid(&format!("{part}.signature_base64"), format!("the {}'s {e}", whose(part))));
    }
    if over_stated.is_ok() {
        return Err(invalid(
            &format!("{part}.batch.audit_path"),
            format!("leads to the root {}, not to the signed root {}", hex::encode(reached), batch.root),
        ));
    }
    if verifies(&reached).is_ok() {
        return Err(invalid(
            &format!("{part}.batch.root"),
            format!(
                "{} is not the root the path leads to ({}), which is the one signed",
                batch.root,
                hex::encode(reached)
            ),
        ));
    }
    Err(invalid(
        &format!("{part}.signature_base64"),
        format!(
            "the {}'s signature verifies over neither the stated root nor the one the path leads to",
            whose(part)
        ),
    ))
}

/// "origin" or "receiver", for messages about a part's signature.
fn whose(part: &str) -> &'static str {
    if part == "origin" { "origin" } else { "receiver" }
}

/// What a verified proof shows.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The envelope, decoded from the signed bytes.
    pub envelope: Envelope,
    /// Its digest (hex).
    pub sha256: String,
    /// The trusted network CA: subject and SHA-256 fingerprint of its DER.
    pub ca: String,
    /// Whether the CA came from the caller (`--ca`) rather than from the file itself.
    pub ca_given: bool,
    /// The origin's identity URI.
    pub origin: String,
    /// The receiver's identity URI and the receive time, when the file has a receipt.
    pub receipt: Option<(String, String)>,
    /// The CA that issued the receiver's certificate, when not the origin's (a CA rotation).
    pub receipt_ca: Option<String>,
    /// The origin's and the receipt's batch (leaf index, tree size), when signed in one.
    pub batches: [Option<(u64, u64)>; 2],
    /// v3: when the content was removed and which fields; `envelope` is then the kept envelope
    /// (only its id is covered by a signature, the receipt's).
    pub removed: Option<(String, Vec<String>)>,
}

/// A batch as people read it: "member 3 of a batch of 17".
fn describe_batch(batch: Option<(u64, u64)>) -> String {
    batch.map_or_else(String::new, |(index, size)| {
        format!(" (signed once for a batch of {size}, of which this is member {}; the path leads to the signed root)", index + 1)
    })
}

impl std::fmt::Display for Verified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let e = &self.envelope;
        writeln!(f, "VERIFIED: proof of envelope {}", e.id)?;
        let trust = if self.ca_given {
            "given with --ca"
        } else {
            "taken from the proof file itself: compare this fingerprint with your network CA, or pass --ca"
        };
        writeln!(f, "network CA: {} ({trust})", self.ca)?;
        writeln!(
            f,
            "origin: node {} ({}) signed this envelope (SHA-256 {}){}:",
            e.origin,
            self.origin,
            self.sha256,
            describe_batch(self.batches[0])
        )?;
        if let Some((at, fields)) = &self.removed {
            writeln!(
                f,
                "  content removed at {at} ({}): the signatures cover the digest above; the fields below are as the node kept them, not signed (but for the id, which a receipt binds)",
                fields.join(", ")
            )?;
        }
        let readable = readable_envelope(e);
        let field = |name: &str| readable[name].as_str().unwrap_or_default().to_owned();
        writeln!(
            f,
            "  {} {} from {} to {}, case {}, precedence {}, created {}, subject \"{}\"",
            field("kind"),
            field("request_type"),
            e.origin,
            e.destination,
            e.case_reference,
            field("precedence"),
            field("created_at"),
            e.subject
        )?;
        match &self.receipt {
            Some((receiver, at)) => writeln!(
                f,
                "receipt: node {} ({receiver}) acknowledged durable receipt of this envelope at {at}{}",
                e.destination,
                describe_batch(self.batches[1])
            ),
            None => writeln!(f, "receipt: none in this file; it proves nothing about delivery"),
        }?;
        match &self.receipt_ca {
            Some(ca) => writeln!(f, "  (the receiver's certificate was issued by the network CA {ca})"),
            None => Ok(()),
        }
    }
}

fn decode_base64(part: &str, text: &str) -> Result<Vec<u8>, ProofError> {
    BASE64.decode(text.trim()).map_err(|e| invalid(part, format!("not base64: {e}")))
}

fn decode_pem(part: &str, text: &str) -> Result<Vec<u8>, ProofError> {
    CertificateDer::from_pem_slice(text.as_bytes())
        .map(|c| c.to_vec())
        .map_err(|e| invalid(part, format!("not a PEM certificate: {e}")))
}

/// The node certificate and the CA of a two-element chain.
fn chain(part: &str, chain: &[String]) -> Result<(Vec<u8>, Vec<u8>), ProofError> {
    match chain {
        [leaf, ca] => Ok((decode_pem(&format!("{part}[0]"), leaf)?, decode_pem(&format!("{part}[1]"), ca)?)),
        _ => Err(invalid(part, format!("expected 2 certificates (node, network CA), found {}", chain.len()))),
    }
}

fn node_identity(part: &str, network: &str, code: &str) -> Result<Identity, ProofError> {
    let code: NodeCode = code.parse().map_err(|e| invalid(part, format!("{e}")))?;
    Ok(Identity::Node { network: network.to_owned(), code })
}

fn describe_ca(der: &[u8]) -> String {
    let subject = x509_parser::parse_x509_certificate(der)
        .map(|(_, c)| c.subject().to_string())
        .unwrap_or_else(|_| "(unparsable certificate)".into());
    format!("{subject}, SHA-256 fingerprint {}", hex::encode(signing::sha256(der)))
}

/// The CA to check a chain's node certificate against: of the trusted ones, the one that issued
/// it (or the first, whose check then says why not); without trusted ones, the chain's own.
fn anchor(leaf: &[u8], chain_ca: Vec<u8>, trusted: Option<&[Vec<u8>]>) -> Vec<u8> {
    match trusted {
        None => chain_ca,
        Some(cas) => {
            signing::issuer_among(leaf, cas).or(cas.first().map(Vec::as_slice)).unwrap_or_default().to_vec()
        }
    }
}

/// Checks a proof file offline. `trusted_cas` are the network CA certificates (DER) to trust
/// (old and new during a rotation); without them the CAs in the file are used (which proves only
/// that the file is consistent, so the output says so).
pub fn verify(text: &str, trusted_cas: Option<&[Vec<u8>]>) -> Result<Verified, ProofError> {
    let proof: ProofFile = serde_json::from_str(text)?;
    if ![FORMAT, FORMAT_V2, FORMAT_V3].contains(&proof.format.as_str()) {
        return Err(invalid(
            "format",
            format!("'{}' is none of {FORMAT}, {FORMAT_V2} and {FORMAT_V3}", proof.format),
        ));
    }
    let batched = proof.origin.batch.is_some() || proof.receipt.as_ref().is_some_and(|r| r.batch.is_some());
    if proof.format == FORMAT && batched {
        return Err(invalid(
            "format",
            format!("{FORMAT} has no batch parts; a file with them is {FORMAT_V2}"),
        ));
    }
    let (envelope, digest) = match (&proof.envelope.removed, proof.format == FORMAT_V3) {
        (Some(removed), true) => removed_envelope(&proof.envelope, removed)?,
        (None, false) => signed_envelope(&proof.envelope)?,
        (Some(_), false) => {
            return Err(invalid(
                "envelope.removed",
                format!("only a {FORMAT_V3} file (content removed) has this part"),
            ));
        }
        (None, true) => {
            return Err(invalid("envelope.removed", format!("required in a {FORMAT_V3} file")));
        }
    };
    if proof.envelope.id != envelope.id {
        return Err(invalid(
            "envelope.id",
            format!("'{}' but the signed envelope is {}", proof.envelope.id, envelope.id),
        ));
    }
    check_readable(&proof.envelope.readable, &readable_envelope(&envelope))?;
    let removed = proof.envelope.removed.as_ref().map(|r| (r.at.clone(), r.fields.clone()));

    // The origin's signature, by a certificate of the network CA naming the origin.
    let (origin_cert, file_ca) = chain("origin.certificate_chain", &proof.origin.certificate_chain)?;
    let ca = anchor(&origin_cert, file_ca, trusted_cas);
    if proof.origin.node != envelope.origin {
        return Err(invalid(
            "origin.node",
            format!("'{}' but the envelope's origin is {}", proof.origin.node, envelope.origin),
        ));
    }
    let origin = node_identity("origin.node", &proof.network, &envelope.origin)?;
    let created_at =
        envelope.created_at.as_ref().map_or(SystemTime::UNIX_EPOCH, crate::domain::timestamp::to_system);
    signing::check_certificate(&origin_cert, &ca, &origin, created_at)
        .map_err(|e| invalid("origin.certificate_chain", e))?;
    let signature = decode_base64("origin.signature_base64", &proof.origin.signature_base64)?;
    match &proof.origin.batch {
        None => signing::verify_with_certificate(
            &origin_cert,
            &signing::envelope_signed_bytes(&digest),
            &signature,
        )
        .map_err(|e| invalid("origin.signature_base64", format!("the origin's {e}")))?,
        Some(batch) => {
            verify_batch("origin", batch, &digest, signing::ENVELOPE_BATCH_CONTEXT, &origin_cert, &signature)?
        }
    }

    // The receipt, by a certificate of the network CA naming the destination.
    let receipt = match &proof.receipt {
        None => None,
        Some(part) => {
            if part.receiver != envelope.destination {
                return Err(invalid(
                    "receipt.receiver",
                    format!("'{}' but the envelope's destination is {}", part.receiver, envelope.destination),
                ));
            }
            let receiver = node_identity("receipt.receiver", &proof.network, &part.receiver)?;
            let (receiver_cert, receiver_file_ca) =
                chain("receipt.certificate_chain", &part.certificate_chain)?;
            let receiver_ca = anchor(&receiver_cert, receiver_file_ca, trusted_cas);
            let received_at = humantime::parse_rfc3339(&part.received_at)
                .map_err(|e| invalid("receipt.received_at", format!("not an RFC 3339 time: {e}")))?;
            let receipt = Receipt {
                envelope_id: part.envelope_id.clone(),
                receiver: part.receiver.clone(),
                received_at: Some(crate::domain::timestamp::from_system(received_at)),
                duplicate: false,
                envelope_sha256: hex_decode("receipt.envelope_sha256", &part.envelope_sha256)?,
                signature: decode_base64("receipt.signature_base64", &part.signature_base64)?,
                receiver_certificate: receiver_cert,
                receipt_batch: part.batch.as_ref().map(|b| inclusion_of("receipt.batch", b)).transpose()?,
            };
            let checked = if removed.is_some() {
                signing::verify_receipt_of_digest(&receipt, &envelope.id, &digest, &receiver, &receiver_ca)
            } else {
                signing::verify_receipt(&receipt, &envelope, &receiver, &receiver_ca)
            };
            // A batch receipt that matches and chains: its batch part names what fails, if anything.
            if let (
                Some(batch),
                Ok(()) | Err(signing::SigningError::Signature(_) | signing::SigningError::Inclusion(_)),
            ) = (&part.batch, &checked)
            {
                let at = receipt.received_at.unwrap_or_default();
                let leaf = signing::receipt_leaf(
                    &receipt.envelope_sha256,
                    &receipt.envelope_id,
                    &receipt.receiver,
                    &at,
                );
                verify_batch(
                    "receipt",
                    batch,
                    &leaf,
                    signing::RECEIPT_BATCH_CONTEXT,
                    &receipt.receiver_certificate,
                    &receipt.signature,
                )?;
            }
            checked.map_err(|e| {
                let part = match e {
                    signing::SigningError::Signature(_) => "receipt.signature_base64",
                    signing::SigningError::Chain(_) | signing::SigningError::Certificate(_) => {
                        "receipt.certificate_chain"
                    }
                    signing::SigningError::Inclusion(_) => "receipt.batch",
                    _ => "receipt",
                };
                invalid(part, format!("the receiver's {e}"))
            })?;
            Some((receiver.uri(), part.received_at.clone(), receiver_ca))
        }
    };
    let (receipt, receipt_ca) = match receipt {
        Some((uri, at, receiver_ca)) => {
            (Some((uri, at)), (receiver_ca != ca).then(|| describe_ca(&receiver_ca)))
        }
        None => (None, None),
    };
    Ok(Verified {
        sha256: hex::encode(digest),
        ca: describe_ca(&ca),
        ca_given: trusted_cas.is_some(),
        origin: origin.uri(),
        receipt,
        receipt_ca,
        envelope,
        batches: [
            proof.origin.batch.as_ref().map(|b| (b.leaf_index, b.tree_size)),
            proof.receipt.as_ref().and_then(|r| r.batch.as_ref()).map(|b| (b.leaf_index, b.tree_size)),
        ],
        removed,
    })
}

/// The envelope of a v1/v2 file and its digest: the signed bytes decide; everything else must
/// agree with them.
fn signed_envelope(part: &EnvelopePart) -> Result<(Envelope, merkle::Hash), ProofError> {
    let canonical = decode_base64("envelope.canonical_base64", &part.canonical_base64)?;
    let envelope = Envelope::decode(canonical.as_slice())
        .map_err(|e| invalid("envelope.canonical_base64", format!("not a protobuf envelope: {e}")))?;
    if signing::canonical_envelope(&envelope) != canonical {
        return Err(invalid(
            "envelope.canonical_base64",
            "not the canonical encoding of an envelope (fields out of order, defaults or a signature inside)",
        ));
    }
    let digest = signing::sha256(&canonical);
    if part.sha256 != hex::encode(digest) {
        return Err(invalid(
            "envelope.sha256",
            format!("{} is not the SHA-256 of the canonical bytes ({})", part.sha256, hex::encode(digest)),
        ));
    }
    Ok((envelope, digest))
}

/// The kept envelope of a v3 file and the digest it states: the signatures over the digest decide
/// (checked by the caller); the kept envelope only has to be one and agree with `readable`.
fn removed_envelope(
    part: &EnvelopePart,
    removed: &RemovedPart,
) -> Result<(Envelope, merkle::Hash), ProofError> {
    if !part.canonical_base64.is_empty() {
        return Err(invalid(
            "envelope.canonical_base64",
            format!("a {FORMAT_V3} file carries the digest only (the content was removed)"),
        ));
    }
    let digest = hash32("envelope.sha256", &part.sha256)?;
    let kept = decode_base64("envelope.removed.kept_base64", &removed.kept_base64)?;
    let envelope = Envelope::decode(kept.as_slice())
        .map_err(|e| invalid("envelope.removed.kept_base64", format!("not a protobuf envelope: {e}")))?;
    humantime::parse_rfc3339(&removed.at)
        .map_err(|e| invalid("envelope.removed.at", format!("not an RFC 3339 time: {e}")))?;
    Ok((envelope, digest))
}

/// Every field of the readable copy must be what the signed bytes say. Fields the copy leaves out
/// (a file written before `show --json` printed them) are not required.
fn check_readable(readable: &Value, signed: &Value) -> Result<(), ProofError> {
    let Some(fields) = readable.as_object() else {
        return Err(invalid("envelope.readable", "must be a JSON object"));
    };
    for (name, value) in fields {
        if signed.get(name) != Some(value) {
            let signed_value = signed.get(name).map_or_else(|| "nothing".to_owned(), Value::to_string);
            return Err(invalid(
                &format!("envelope.readable.{name}"),
                format!(
                    "{value} does not match the signed bytes (canonical_base64), which say {signed_value}"
                ),
            ));
        }
    }
    Ok(())
}

/// `text` decoded from hex, or an error naming the proof file's `part`: the verifier must say
/// which part of the file is wrong, which `hex`'s own error does not.
fn hex_decode(part: &str, text: &str) -> Result<Vec<u8>, ProofError> {
    hex::decode(text).map_err(|_| invalid(part, "not hexadecimal"))
}

/// The readable part of a proof file: the envelope as JSON, enum values by short name. Part of
/// proof format v1: a verifier compares it with the signed bytes, so it never changes for v1
/// (the command line shows envelopes this way too).
pub fn readable_envelope(e: &Envelope) -> Value {
    json!({
        "id": e.id,
        "origin": e.origin,
        "destination": e.destination,
        "kind": e.kind().short_name(),
        "request_type": e.request_type().short_name(),
        "precedence": e.precedence().short_name(),
        "case_reference": e.case_reference,
        "subject": e.subject,
        "body": e.body,
        "language": e.language,
        "created_at": crate::domain::json::time(e.created_at.as_ref()),
        "expires_at": crate::domain::json::time(e.expires_at.as_ref()),
        "in_reply_to": e.in_reply_to,
        "attachments": e.attachments.iter().map(|a| json!({
            "name": a.name, "media_type": a.media_type, "size_bytes": a.size_bytes,
            "sha256": hex::encode(&a.sha256),
        })).collect::<Vec<_>>(),
        "handling_code": e.handling_code().short_name(),
        "handling_restrictions": e.handling_restrictions,
        "exercise": e.exercise,
        "outcome": crate::domain::json::outcome_json(e.outcome.as_ref()),
        "follow_up": e.follow_up.as_ref().map(|f| json!({
            "extend_until": crate::domain::json::time(f.extend_until.as_ref()),
            "mla_reference": f.mla_reference,
        })),
        "preservation": e.preservation.as_ref().map(|p| json!({
            "requesting_authority": p.requesting_authority,
            "offence": p.offence,
            "facts": p.facts,
            "data_to_preserve": p.data_to_preserve,
            "link_to_offence": p.link_to_offence,
            "custodian_or_location": p.custodian_or_location,
            "necessity": p.necessity,
            "mutual_legal_assistance_to_follow": p.mutual_legal_assistance_to_follow,
            "preservation_days": p.preservation_days,
        })),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trips_and_hex_decodes() {
        let der = (0..=255u8).collect::<Vec<_>>();
        let text = pem(&der);
        assert!(text.lines().all(|l| l.len() <= 64));
        assert_eq!(decode_pem("x", &text).unwrap(), der);
        assert_eq!(hex_decode("x", &hex::encode(&der)).unwrap(), der);
        assert!(hex_decode("x", "abc").is_err());
        assert!(hex_decode("x", "zz").is_err());
    }

    #[test]
    fn exact_times_keep_nanoseconds() {
        let at = prost_types::Timestamp { seconds: 1_764_000_000, nanos: 123_456_789 };
        let text = exact_time(&at);
        assert_eq!(text, "2025-11-24T16:00:00.123456789Z");
        let back = crate::domain::timestamp::from_system(humantime::parse_rfc3339(&text).unwrap());
        assert_eq!(back, at);
    }

    #[test]
    fn the_readable_copy_may_leave_fields_out_but_never_differ() {
        let signed = serde_json::json!({"subject": "Preserve", "body": "logs"});
        check_readable(&serde_json::json!({"subject": "Preserve"}), &signed).unwrap();
        let error = check_readable(&serde_json::json!({"subject": "Other"}), &signed).unwrap_err();
        assert!(
            error.to_string().starts_with("envelope.readable.subject: \"Other\" does not match"),
            "{error}"
        );
        let error = check_readable(&serde_json::json!({"note": "added"}), &signed).unwrap_err();
        assert!(error.to_string().contains("which say nothing"), "{error}");
        assert!(check_readable(&serde_json::json!([]), &signed).is_err());
    }

    /// A proof file of `format` whose envelope part has (or not) a `removed` part; its
    /// signatures are not real (the checks before them are what these tests reach).
    fn file(format: &str, removed: bool) -> String {
        let proof = ProofFile {
            format: format.into(),
            network: "net".into(),
            envelope: EnvelopePart {
                id: "id".into(),
                sha256: "00".repeat(32),
                canonical_base64: if removed { String::new() } else { BASE64.encode(b"") },
                readable: json!({}),
                removed: removed.then(|| RemovedPart {
                    at: "2026-12-05T09:00:00Z".into(),
                    fields: vec!["body".into()],
                    kept_base64: BASE64
                        .encode(Envelope { id: "id".into(), ..Default::default() }.encode_to_vec()),
                }),
            },
            origin: OriginPart {
                node: "VN".into(),
                signature_base64: String::new(),
                certificate_chain: Vec::new(),
                batch: None,
            },
            receipt: None,
        };
        serde_json::to_string(&proof).unwrap()
    }

    #[test]
    fn the_removed_part_belongs_to_v3_only_and_v3_needs_it() {
        let error = verify(&file(FORMAT, true), None).unwrap_err().to_string();
        assert!(error.starts_with("envelope.removed: only a hanoi247-proof-v3 file"), "{error}");
        let error = verify(&file(FORMAT_V3, false), None).unwrap_err().to_string();
        assert!(error.starts_with("envelope.removed: required"), "{error}");
        // A v3 file gets past the envelope to the signatures (here: no certificate chain).
        let error = verify(&file(FORMAT_V3, true), None).unwrap_err().to_string();
        assert!(error.starts_with("origin.certificate_chain: expected 2 certificates"), "{error}");
        let error = verify(&file("hanoi247-proof-v4", true), None).unwrap_err().to_string();
        assert!(error.starts_with("format: 'hanoi247-proof-v4' is none of"), "{error}");
        // v1 and v2 files are written without the new keys, as before.
        assert!(!file(FORMAT, false).contains("removed"));
    }

    #[test]
    fn a_file_that_is_not_a_proof_is_refused_by_name() {
        let error = verify("{}", None).unwrap_err();
        assert!(error.to_string().contains("not a hanoi247 proof file"), "{error}");
    }
}
