//! The signed directory: the network's member list as one TOML file, signed by the network
//! secretariat's Ed25519 key, and the copy a running node holds (replaced only by a newer,
//! correctly signed directory).
//!
//! File format (`directory.toml`):
//!
//! ```toml
//! network = "hanoi247"                  # the network name in every certificate
//! version = 7                           # only grows; a node refuses an older or equal one
//! issued_at = "2026-11-29T23:00:00Z"     # when `directory sign` ran (RFC 3339, UTC)
//! signature = "<128 hex digits>"        # Ed25519, see below
//!
//! [[members]]
//! code = "FR"
//! name = "..."; endpoint = "host:port"; languages = [...]; request_types = [...]
//! time_zone = "Europe/Paris"; phone = "+33 ..."
//! certificate_sha256 = "<64 hex digits>" # SHA-256 of the member's node certificate (DER)
//! next_certificate_sha256 = "<64 hex>"   # optional, during a rotation: also accepted
//! ```
//!
//! The signed bytes are [`SIGNATURE_CONTEXT`] followed by the compact JSON (serde_json, no
//! whitespace) of the object `{"network","version","issued_at","members"}` with the keys in
//! that order, members in file order and each member's keys in the order of
//! [`DirectoryEntry`]'s fields (`code, name, endpoint, languages, request_types, time_zone,
//! phone, certificate_sha256`), every key present (empty strings and lists included). So the
//! signature covers every value and the member order, but not TOML layout or comments: a
//! changed value, an added or removed member fails verification, reformatting does not.
//!
//! Rotation (format v2): a member may carry `next_certificate_sha256`, the certificate it
//! rotates to; peers accept both while both are listed. An empty next pin is left out of the
//! JSON, and a directory without any next pin is signed exactly as before (context
//! [`SIGNATURE_CONTEXT`]), so directories signed before the field existed verify unchanged. A
//! directory with a next pin is signed under [`SIGNATURE_CONTEXT_V2`] with the field in each
//! member's JSON after `certificate_sha256`: the pin is covered, and such a signature can never
//! pass for a v1 directory's (a node that does not know the field refuses the file by its name).
//!
//! The secretariat's key can be rotated too: a node accepts a signature by `directory.public_key`
//! or by `directory.next_public_key` when that is set (see [`LiveDirectory`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::config::DirectoryEntry;
use crate::domain::identity::NodeCode;

/// Prefixed to the signed bytes so that a secretariat signature over a directory can never be
/// taken for a signature over anything else (and a future format gets another prefix).
pub const SIGNATURE_CONTEXT: &[u8] = b"hanoi247 directory v1\n";

/// The context of a directory in which some member carries a next certificate pin (rotation).
pub const SIGNATURE_CONTEXT_V2: &[u8] = b"hanoi247 directory v2\n";

/// Why a directory, a key or a certificate could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a directory (TOML, unknown key, bad value); the message names the key.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The signature is missing or does not verify with the secretariat's public key.
    #[error("{path}: bad signature: {message}")]
    Signature {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A key could not be made, read or used.
    #[error("{0}")]
    Key(String),
    /// A key or file could not be written.
    #[error(transparent)]
    Write(#[from] crate::trust::pki::PkiError),
    /// A command-line argument is not usable (`hanoi247 directory ...`).
    #[error("{0}")]
    Usage(String),
}

/// The network's member list, as in the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Directory {
    /// The network name.
    pub network: String,
    /// Grows with every `sign`.
    pub version: u64,
    /// When it was signed (RFC 3339, UTC); empty before the first `sign`.
    #[serde(default)]
    pub issued_at: String,
    /// Hex Ed25519 signature over [`Directory::signed_bytes`]; empty when unsigned.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub signature: String,
    /// The members, in the order the secretariat keeps them (by code).
    #[serde(default)]
    pub members: Vec<DirectoryEntry>,
}

/// The part of a directory that is signed, in its canonical key order.
#[derive(Serialize)]
struct Signed<'a> {
    network: &'a str,
    version: u64,
    issued_at: &'a str,
    members: &'a [DirectoryEntry],
}

impl Directory {
    /// An empty, unsigned directory (version 0).
    pub fn empty(network: &str) -> Self {
        Self {
            network: network.to_owned(),
            version: 0,
            issued_at: String::new(),
            signature: String::new(),
            members: Vec::new(),
        }
    }

    /// The bytes the secretariat signs: [`SIGNATURE_CONTEXT`] and the canonical JSON.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let signed = Signed {
            network: &self.network,
            version: self.version,
            issued_at: &self.issued_at,
            members: &self.members,
        };
        let rotating = self.members.iter().any(|m| !m.next_certificate_sha256.is_empty());
        let mut bytes = if rotating { SIGNATURE_CONTEXT_V2 } else { SIGNATURE_CONTEXT }.to_vec();
        // Serialising plain strings, numbers and lists into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut bytes, &signed);
        bytes
    }

    /// The next version, issued now and signed with `key`.
    pub fn sign(&mut self, key: &SecretariatKey) {
        self.version += 1;
        self.issued_at = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        self.signature = hex::encode(key.pair.sign(&self.signed_bytes()));
    }

    /// Checks the signature with the secretariat's public key.
    pub fn verify(&self, public_key: &PublicKey) -> Result<(), String> {
        self.verify_any(std::slice::from_ref(public_key))
    }

    /// Checks the signature with any of `public_keys` (the secretariat's key and, while it
    /// rotates its key, the next one).
    pub fn verify_any(&self, public_keys: &[PublicKey]) -> Result<(), String> {
        if self.signature.is_empty() {
            return Err("the directory is not signed (run `hanoi247 directory sign`)".into());
        }
        let signature = hex::decode(&self.signature).map_err(|_| "signature: not hex")?;
        let bytes = self.signed_bytes();
        if public_keys
            .iter()
            .any(|key| UnparsedPublicKey::new(&ED25519, &key.0).verify(&bytes, &signature).is_ok())
        {
            return Ok(());
        }
        let keys: Vec<String> = public_keys.iter().map(PublicKey::to_hex).collect();
        Err(format!(
            "the signature does not match the directory and the secretariat's public key ({})",
            keys.join(" or next ")
        ))
    }

    /// Starts the rotation of member `code`'s certificate: `next_sha256` is accepted beside its
    /// current pin (unsigned until [`Directory::sign`]).
    pub fn set_next_pin(&mut self, code: NodeCode, next_sha256: &str) -> Result<(), String> {
        let member = self
            .members
            .iter_mut()
            .find(|m| m.code == code)
            .ok_or_else(|| format!("{code} is not a member"))?;
        if member.certificate_sha256.is_empty() {
            return Err(format!(
                "{code} has no current pin: pin its certificate with `directory add --cert` instead"
            ));
        }
        member.next_certificate_sha256 = next_sha256.to_ascii_lowercase();
        Ok(())
    }

    /// Ends the rotation of member `code`'s certificate: its next pin becomes the only pin.
    pub fn promote_next_pin(&mut self, code: NodeCode) -> Result<String, String> {
        let member = self
            .members
            .iter_mut()
            .find(|m| m.code == code)
            .ok_or_else(|| format!("{code} is not a member"))?;
        if member.next_certificate_sha256.is_empty() {
            return Err(format!("{code} has no next pin: there is no rotation to finish"));
        }
        member.certificate_sha256 = std::mem::take(&mut member.next_certificate_sha256);
        Ok(member.certificate_sha256.clone())
    }

    /// The member `code`, if listed.
    pub fn member(&self, code: NodeCode) -> Option<&DirectoryEntry> {
        self.members.iter().find(|m| m.code == code)
    }

    /// Adds `entry`, or replaces the member with its code; keeps members ordered by code.
    pub fn upsert(&mut self, entry: DirectoryEntry) {
        self.members.retain(|m| m.code != entry.code);
        self.members.push(entry);
        self.members.sort_by(|a, b| a.code.as_str().cmp(b.code.as_str()));
    }

    /// Checks the values: a valid network name, unique codes, `host:port` endpoints, known
    /// request types, 64-hex-digit fingerprints. The message names the member and key.
    pub fn check(&self) -> Result<(), String> {
        crate::domain::identity::validate_network_name(&self.network).map_err(|e| format!("network: {e}"))?;
        for (i, member) in self.members.iter().enumerate() {
            let at = format!("members[{i}] ({})", member.code);
            if self.members[..i].iter().any(|m| m.code == member.code) {
                return Err(format!("{at}: {} is listed twice", member.code));
            }
            if member.endpoint.rsplit_once(':').is_none_or(|(_, port)| port.parse::<u16>().is_err()) {
                return Err(format!("{at}.endpoint: '{}' is not host:port", member.endpoint));
            }
            for kind in &member.request_types {
                let known = crate::proto::RequestType::from_str_name(&format!("REQUEST_TYPE_{kind}"))
                    .is_some_and(|t| t != crate::proto::RequestType::Unspecified);
                if !known {
                    return Err(format!(
                        "{at}.request_types: '{kind}' is not a request type (e.g. PRESERVATION)"
                    ));
                }
            }
            let fingerprint = &member.certificate_sha256;
            if !fingerprint.is_empty() && !hex::decode(fingerprint).is_ok_and(|bytes| bytes.len() == 32) {
                return Err(format!("{at}.certificate_sha256: not 64 hex digits"));
            }
            let next = &member.next_certificate_sha256;
            if !next.is_empty() {
                if !hex::decode(next).is_ok_and(|bytes| bytes.len() == 32) {
                    return Err(format!("{at}.next_certificate_sha256: not 64 hex digits"));
                }
                if fingerprint.is_empty() {
                    return Err(format!(
                        "{at}.next_certificate_sha256: set without certificate_sha256 (a next pin rotates from a current one)"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Parses a directory file's text (no signature check).
    pub fn parse(path: &Path, text: &str) -> Result<Self, DirectoryError> {
        let directory: Directory = toml::from_str(text)
            .map_err(|e| DirectoryError::Invalid { path: path.to_owned(), message: e.to_string() })?;
        directory.check().map_err(|message| DirectoryError::Invalid { path: path.to_owned(), message })?;
        Ok(directory)
    }

    /// Reads a directory file (no signature check).
    pub fn read(path: &Path) -> Result<Self, DirectoryError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| DirectoryError::Io { path: path.to_owned(), source })?;
        Self::parse(path, &text)
    }

    /// Reads a directory file and checks its signature and network: what a node accepts.
    pub fn load_verified(path: &Path, public_key: &PublicKey, network: &str) -> Result<Self, DirectoryError> {
        Self::load_verified_any(path, std::slice::from_ref(public_key), network)
    }

    /// Like [`Directory::load_verified`], signed by any of `public_keys` (the secretariat's key
    /// and, while it rotates its key, the next one).
    pub fn load_verified_any(
        path: &Path,
        public_keys: &[PublicKey],
        network: &str,
    ) -> Result<Self, DirectoryError> {
        let directory = Self::read(path)?;
        directory
            .verify_any(public_keys)
            .map_err(|message| DirectoryError::Signature { path: path.to_owned(), message })?;
        if directory.network != network {
            return Err(DirectoryError::Invalid {
                path: path.to_owned(),
                message: format!(
                    "network: the directory is for '{}', this node is in '{network}'",
                    directory.network
                ),
            });
        }
        Ok(directory)
    }

    /// The file's text.
    pub fn to_toml(&self) -> String {
        let header = "# hanoi247 signed directory: edit with `hanoi247 directory add`, then `hanoi247 directory sign`.\n\
                      # The signature covers every value below (see src/directory.rs); editing by hand breaks it.\n";
        // A struct of strings, numbers and lists of tables always serialises.
        format!("{header}{}", toml::to_string(self).unwrap_or_default())
    }

    /// Writes the file atomically (a node polling it never sees half a file).
    pub fn write(&self, path: &Path) -> Result<(), DirectoryError> {
        crate::trust::pki::write_public_file(path, &self.to_toml())?;
        Ok(())
    }
}

pub use crate::domain::identity::PublicKey;

/// The secretariat's signing key.
pub struct SecretariatKey {
    pair: Ed25519KeyPair,
}

impl SecretariatKey {
    /// A new key and its PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`, as openssl writes Ed25519 keys).
    pub fn generate() -> Result<(Self, String), DirectoryError> {
        let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
            .map_err(|e| DirectoryError::Key(format!("cannot make an Ed25519 key: {e}")))?;
        let pem = key_pair.serialize_pem();
        Ok((Self::from_pkcs8(key_pair.serialized_der())?, pem))
    }

    /// Reads a PKCS#8 PEM key file.
    pub fn load(path: &Path) -> Result<Self, DirectoryError> {
        let pem = std::fs::read_to_string(path)
            .map_err(|source| DirectoryError::Io { path: path.to_owned(), source })?;
        let key_pair = rcgen::KeyPair::from_pem(&pem).map_err(|e| {
            DirectoryError::Key(format!("{}: not a PKCS#8 PEM private key: {e}", path.display()))
        })?;
        Self::from_pkcs8(key_pair.serialized_der())
            .map_err(|e| DirectoryError::Key(format!("{}: {e}", path.display())))
    }

    fn from_pkcs8(der: &[u8]) -> Result<Self, DirectoryError> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map_err(|e| DirectoryError::Key(format!("not an Ed25519 key: {e}")))?;
        Ok(Self { pair })
    }

    /// Makes a key, writes it 0600 and its public key (hex) beside it; refuses to overwrite.
    pub fn create(key_path: &Path, public_path: &Path) -> Result<Self, DirectoryError> {
        if key_path.exists() {
            return Err(DirectoryError::Key(format!(
                "{} already exists (a secretariat key is never overwritten)",
                key_path.display()
            )));
        }
        let (key, pem) = Self::generate()?;
        crate::trust::pki::write_private_key(key_path, &pem)?;
        crate::trust::pki::write_public_file(public_path, &format!("{}\n", key.public_key().to_hex()))?;
        Ok(key)
    }

    /// Its public key.
    pub fn public_key(&self) -> PublicKey {
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(self.pair.public_key().as_ref());
        PublicKey(bytes)
    }
}

pub use crate::domain::identity::fingerprint;

/// The fingerprint of the first certificate of a PEM file (a node's `node.pem`).
pub fn fingerprint_of_file(path: &Path) -> Result<String, DirectoryError> {
    let certs = crate::trust::tls::load_certs(path).map_err(|e| DirectoryError::Key(e.to_string()))?;
    // load_certs refuses a file without certificates.
    Ok(certs.first().map(|c| fingerprint(c.as_ref())).unwrap_or_default())
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reloaded {
    /// The file holds the directory in use already.
    Unchanged,
    /// A newer directory is in use now.
    Updated {
        /// The version before.
        from: u64,
        /// The version now.
        to: u64,
    },
}

/// The directory a running node uses, replaced only by a newer, correctly signed one; a
/// `watch` channel tells the delivery supervisor about each replacement.
pub struct LiveDirectory {
    path: PathBuf,
    public_keys: Vec<PublicKey>,
    network: String,
    current: watch::Sender<Arc<Directory>>,
}

impl LiveDirectory {
    /// Loads the directory a node starts with, signed by one of `public_keys` (the secretariat's
    /// key, and its next key while that rotates); a bad one stops the start.
    pub fn load(path: &Path, public_keys: Vec<PublicKey>, network: &str) -> Result<Self, DirectoryError> {
        let directory = Directory::load_verified_any(path, &public_keys, network)?;
        Ok(Self {
            path: path.to_owned(),
            public_keys,
            network: network.to_owned(),
            current: watch::channel(Arc::new(directory)).0,
        })
    }

    /// The directory in use.
    pub fn current(&self) -> Arc<Directory> {
        Arc::clone(&self.current.borrow())
    }

    /// Told of every replacement.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Directory>> {
        self.current.subscribe()
    }

    /// Reads the file again: a good, newer directory replaces the one in use; anything else
    /// (unreadable, bad signature, other network, older or equal version with other content) is
    /// refused and the directory in use stays.
    pub fn reload(&self) -> Result<Reloaded, DirectoryError> {
        let new = Directory::load_verified_any(&self.path, &self.public_keys, &self.network)?;
        let old = self.current();
        if new == *old {
            return Ok(Reloaded::Unchanged);
        }
        if new.version <= old.version {
            return Err(DirectoryError::Invalid {
                path: self.path.clone(),
                message: format!(
                    "version {} is not newer than version {} in use (a directory's version only grows)",
                    new.version, old.version
                ),
            });
        }
        let (from, to) = (old.version, new.version);
        self.current.send_replace(Arc::new(new));
        Ok(Reloaded::Updated { from, to })
    }

    /// The file it reloads from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(code: &str) -> DirectoryEntry {
        DirectoryEntry {
            code: code.parse().unwrap(),
            name: format!("24/7 point of contact {code}"),
            endpoint: "127.0.0.1:7247".into(),
            languages: vec!["en".into(), "fr".into()],
            request_types: vec!["PRESERVATION".into()],
            time_zone: "Europe/Paris".into(),
            phone: "+33 1 00 00 00 00".into(),
            certificate_sha256: fingerprint(b"certificate"),
            next_certificate_sha256: String::new(),
        }
    }

    fn signed() -> (Directory, SecretariatKey) {
        let (key, _) = SecretariatKey::generate().unwrap();
        let mut directory = Directory::empty("hanoi247-test");
        directory.upsert(member("FR"));
        directory.upsert(member("DE"));
        directory.sign(&key);
        (directory, key)
    }

    #[test]
    fn a_signed_directory_verifies_after_a_round_trip_through_its_file() {
        let (directory, key) = signed();
        assert_eq!(directory.version, 1);
        let codes: Vec<&str> = directory.members.iter().map(|m| m.code.as_str()).collect();
        assert_eq!(codes, ["DE", "FR"], "members are kept by code");
        let text = directory.to_toml();
        let parsed = Directory::parse(Path::new("d.toml"), &text).unwrap();
        assert_eq!(parsed, directory);
        parsed.verify(&key.public_key()).unwrap();
    }

    #[test]
    fn one_changed_byte_of_any_signed_value_fails() {
        let (directory, key) = signed();
        let text = directory.to_toml();
        let public = key.public_key();
        // Change one byte inside each quoted value or number in turn (the signature excepted).
        let mut tried = 0;
        for (i, line) in text.lines().enumerate() {
            let Some((name, value)) = line.split_once(" = ") else { continue };
            if name == "signature" || value.len() < 3 {
                continue;
            }
            let position = text.lines().take(i).map(|l| l.len() + 1).sum::<usize>() + name.len() + 4;
            let mut bytes = text.clone().into_bytes();
            bytes[position] = if bytes[position] == b'1' { b'2' } else { b'1' };
            let Ok(changed) = std::str::from_utf8(&bytes) else { continue };
            let Ok(parsed) = Directory::parse(Path::new("d.toml"), changed) else { continue };
            tried += 1;
            assert!(parsed.verify(&public).is_err(), "changed line {line:?} still verifies");
        }
        assert!(tried >= 10, "only {tried} values changed");
        // And a changed signature byte fails too.
        let mut tampered = directory.clone();
        let flipped = if tampered.signature.starts_with('0') { "1" } else { "0" };
        tampered.signature.replace_range(0..1, flipped);
        assert!(tampered.verify(&public).is_err());
    }

    #[test]
    fn a_removed_member_or_another_key_fails_and_unsigned_is_named() {
        let (directory, key) = signed();
        let mut fewer = directory.clone();
        fewer.members.pop();
        assert!(fewer.verify(&key.public_key()).is_err());
        let (other, _) = SecretariatKey::generate().unwrap();
        assert!(directory.verify(&other.public_key()).is_err());
        let err = Directory::empty("hanoi247-test").verify(&key.public_key()).unwrap_err();
        assert!(err.contains("not signed"), "{err}");
    }

    #[test]
    fn bad_values_are_named() {
        let mut directory = Directory::empty("hanoi247-test");
        let mut bad = member("FR");
        bad.endpoint = "localhost".into();
        directory.members.push(bad);
        assert!(directory.check().unwrap_err().contains("members[0] (FR).endpoint"));
        let mut bad = member("FR");
        bad.request_types = vec!["PIZZA".into()];
        directory.members = vec![bad];
        assert!(directory.check().unwrap_err().contains("request_types"));
        let mut bad = member("FR");
        bad.certificate_sha256 = "abc".into();
        directory.members = vec![bad];
        assert!(directory.check().unwrap_err().contains("certificate_sha256"));
        directory.members = vec![member("FR"), member("FR")];
        assert!(directory.check().unwrap_err().contains("listed twice"));
    }

    #[test]
    fn the_live_directory_takes_only_newer_good_versions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("directory.toml");
        let (mut directory, key) = signed();
        directory.write(&path).unwrap();
        let live = LiveDirectory::load(&path, vec![key.public_key()], "hanoi247-test").unwrap();
        assert_eq!(live.reload().unwrap(), Reloaded::Unchanged);

        // A bad signature is refused; the old directory stays.
        let mut forged = directory.clone();
        forged.version = 5;
        forged.write(&path).unwrap();
        assert!(matches!(live.reload(), Err(DirectoryError::Signature { .. })));
        assert_eq!(live.current().version, 1);

        directory.upsert(member("VN"));
        directory.sign(&key);
        directory.write(&path).unwrap();
        assert_eq!(live.reload().unwrap(), Reloaded::Updated { from: 1, to: 2 });

        // An older, correctly signed one is refused.
        let (mut older, _) = (Directory::empty("hanoi247-test"), ());
        older.sign(&key);
        older.write(&path).unwrap();
        let err = live.reload().unwrap_err().to_string();
        assert!(err.contains("not newer"), "{err}");
        assert_eq!(live.current().members.len(), 3);
    }

    /// A directory as signed before next pins existed: the v1 context and members' JSON without
    /// the field, written out by hand so that the test does not depend on today's code.
    #[test]
    fn a_directory_signed_before_next_pins_existed_still_verifies() {
        let (key, _) = SecretariatKey::generate().unwrap();
        let pin = fingerprint(b"certificate");
        let json = format!(
            r#"{{"network":"hanoi247-test","version":3,"issued_at":"2026-01-01T00:00:00Z","members":[{{"code":"FR","name":"24/7 FR","endpoint":"127.0.0.1:7247","languages":["fr"],"request_types":[],"time_zone":"Europe/Paris","phone":"","certificate_sha256":"{pin}"}}]}}"#
        );
        let signature = hex::encode(key.pair.sign(&[SIGNATURE_CONTEXT, json.as_bytes()].concat()));
        let text = format!(
            "network = \"hanoi247-test\"\nversion = 3\nissued_at = \"2026-01-01T00:00:00Z\"\nsignature = \"{signature}\"\n\n[[members]]\ncode = \"FR\"\nname = \"24/7 FR\"\nendpoint = \"127.0.0.1:7247\"\nlanguages = [\"fr\"]\nrequest_types = []\ntime_zone = \"Europe/Paris\"\nphone = \"\"\ncertificate_sha256 = \"{pin}\"\n"
        );
        let old = Directory::parse(Path::new("old.toml"), &text).unwrap();
        old.verify(&key.public_key()).unwrap();
        assert_eq!(old.signed_bytes(), [SIGNATURE_CONTEXT, json.as_bytes()].concat());
        // Written by today's code, the old directory is byte for byte what it was signed as.
        let rewritten = Directory::parse(Path::new("d.toml"), &old.to_toml()).unwrap();
        rewritten.verify(&key.public_key()).unwrap();
        assert!(!old.to_toml().contains("next_certificate_sha256"));

        // A next pin added to the old file by hand is not covered by its signature.
        let added = text.replace(
            "certificate_sha256 = ",
            &format!("next_certificate_sha256 = \"{}\"\ncertificate_sha256 = ", fingerprint(b"new")),
        );
        let forged = Directory::parse(Path::new("forged.toml"), &added).unwrap();
        assert!(forged.verify(&key.public_key()).is_err());
    }

    #[test]
    fn a_next_pin_is_signed_under_the_v2_context_and_covered() {
        let (mut directory, key) = signed();
        let next = fingerprint(b"new certificate");
        directory.set_next_pin("FR".parse().unwrap(), &next).unwrap();
        directory.sign(&key);
        assert!(directory.signed_bytes().starts_with(SIGNATURE_CONTEXT_V2));
        let parsed = Directory::parse(Path::new("d.toml"), &directory.to_toml()).unwrap();
        parsed.verify(&key.public_key()).unwrap();
        assert_eq!(
            parsed.member("FR".parse().unwrap()).unwrap().pins(),
            [fingerprint(b"certificate"), next.clone()]
        );
        // Dropping or changing the next pin breaks the signature.
        let mut dropped = parsed.clone();
        dropped.members.iter_mut().for_each(|m| m.next_certificate_sha256.clear());
        assert!(dropped.verify(&key.public_key()).is_err());
        let mut changed = parsed.clone();
        changed.set_next_pin("FR".parse().unwrap(), &fingerprint(b"other")).unwrap();
        assert!(changed.verify(&key.public_key()).is_err());

        // Finishing the rotation: the next pin becomes the only one.
        let mut finished = parsed;
        assert_eq!(finished.promote_next_pin("FR".parse().unwrap()).unwrap(), next);
        let fr = finished.member("FR".parse().unwrap()).unwrap();
        assert_eq!(fr.pins(), vec![next.clone()]);
        assert!(finished.promote_next_pin("FR".parse().unwrap()).unwrap_err().contains("no next pin"));
        assert!(finished.set_next_pin("XX".parse().unwrap(), &next).unwrap_err().contains("not a member"));
    }

    #[test]
    fn both_pins_are_accepted_and_a_third_is_named_with_both() {
        let mut fr = member("FR");
        let (current, next) = (fingerprint(b"certificate"), fingerprint(b"new certificate"));
        fr.next_certificate_sha256 = next.clone();
        assert!(fr.pin_accepts(&current) && fr.pin_accepts(&next.to_uppercase()));
        assert!(!fr.pin_accepts(&fingerprint(b"stolen")) && !fr.pin_accepts(""));
        assert_eq!(fr.describe_pins(), format!("current {current} or next {next}"));
        fr.next_certificate_sha256 = "abc".into();
        let mut directory = Directory::empty("hanoi247-test");
        directory.members.push(fr.clone());
        assert!(directory.check().unwrap_err().contains("members[0] (FR).next_certificate_sha256"));
        fr.next_certificate_sha256 = next;
        fr.certificate_sha256.clear();
        directory.members = vec![fr];
        assert!(directory.check().unwrap_err().contains("without certificate_sha256"));
    }

    #[test]
    fn a_directory_signed_by_the_secretariats_next_key_is_accepted_beside_the_current_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("directory.toml");
        let (mut directory, current) = signed();
        directory.write(&path).unwrap();
        let (next, _) = SecretariatKey::generate().unwrap();
        let live = LiveDirectory::load(&path, vec![current.public_key(), next.public_key()], "hanoi247-test")
            .unwrap();
        directory.upsert(member("VN"));
        directory.sign(&next);
        directory.write(&path).unwrap();
        assert_eq!(live.reload().unwrap(), Reloaded::Updated { from: 1, to: 2 });
        // A key that is neither is refused, naming both.
        let (stranger, _) = SecretariatKey::generate().unwrap();
        directory.sign(&stranger);
        directory.write(&path).unwrap();
        let err = live.reload().unwrap_err().to_string();
        assert!(
            err.contains(&current.public_key().to_hex()) && err.contains(&next.public_key().to_hex()),
            "{err}"
        );
        assert_eq!(live.current().version, 2);
    }

    #[test]
    fn keys_are_written_0600_and_never_overwritten() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (key_path, pub_path) = (dir.path().join("s.key"), dir.path().join("s.pub"));
        let key = SecretariatKey::create(&key_path, &pub_path).unwrap();
        let mode = std::fs::metadata(&key_path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(SecretariatKey::load(&key_path).unwrap().public_key(), key.public_key());
        let public = PublicKey::from_hex_or_file(pub_path.to_str().unwrap()).unwrap();
        assert_eq!(public, key.public_key());
        assert!(SecretariatKey::create(&key_path, &pub_path).is_err());
    }
}
