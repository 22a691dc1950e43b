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
//! ```
//!
//! The signed bytes are [`SIGNATURE_CONTEXT`] followed by the compact JSON (serde_json, no
//! whitespace) of the object `{"network","version","issued_at","members"}` with the keys in
//! that order, members in file order and each member's keys in the order of
//! [`DirectoryEntry`]'s fields (`code, name, endpoint, languages, request_types, time_zone,
//! phone, certificate_sha256`), every key present (empty strings and lists included). So the
//! signature covers every value and the member order, but not TOML layout or comments: a
//! changed value, an added or removed member fails verification, reformatting does not.

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
        let mut bytes = SIGNATURE_CONTEXT.to_vec();
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
        if self.signature.is_empty() {
            return Err("the directory is not signed (run `hanoi247 directory sign`)".into());
        }
        let signature = hex::decode(&self.signature).map_err(|_| "signature: not hex")?;
        UnparsedPublicKey::new(&ED25519, &public_key.0)
            .verify(&self.signed_bytes(), &signature)
            .map_err(|_| "the signature does not match the directory and the secretariat's public key".into())
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
        let directory = Self::read(path)?;
        directory
            .verify(public_key)
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
    public_key: PublicKey,
    network: String,
    current: watch::Sender<Arc<Directory>>,
}

impl LiveDirectory {
    /// Loads the directory a node starts with; a bad one stops the start.
    pub fn load(path: &Path, public_key: PublicKey, network: &str) -> Result<Self, DirectoryError> {
        let directory = Directory::load_verified(path, &public_key, network)?;
        Ok(Self {
            path: path.to_owned(),
            public_key,
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
        let new = Directory::load_verified(&self.path, &self.public_key, &self.network)?;
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
        let live = LiveDirectory::load(&path, key.public_key(), "hanoi247-test").unwrap();
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
