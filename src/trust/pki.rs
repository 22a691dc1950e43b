//! Making certificates with rcgen: the network CA, nodes' local CAs, node, desk-server and desk
//! client certificates, and writing them with safe file modes. All keys are ECDSA P-256.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use time::{Duration, OffsetDateTime};

use crate::atomic_file;
use crate::domain::identity::{IdentityError, NodeCode, client_uri, node_uri};

/// A certificate could not be made or written.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// rcgen refused the parameters or the key.
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// A file could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A name is not a valid identity part.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// An existing CA could not be loaded from its PEM files.
    #[error("cannot load the CA: {0}")]
    BadCa(String),
    /// A revocation list (or the certificate to revoke) could not be read, or belongs to
    /// another CA.
    #[error("{0}")]
    BadCrl(String),
    /// A PKCS#12 file could not be made.
    #[error("PKCS#12: {0}")]
    Pkcs12(String),
}

/// A PEM certificate and its PEM private key.
#[derive(Debug, Clone)]
pub struct CertifiedKey {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
}

/// A certificate authority that can sign certificates (the network CA or a node's local CA).
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    key_pem: String,
}

/// Validity starts an hour back so that a peer whose clock is a little behind accepts it.
fn validity(params: &mut CertificateParams, days: u32) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(i64::from(days));
}

fn common_name(name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn
}

fn host_san(host: &str) -> Result<SanType, PkiError> {
    Ok(match host.parse::<IpAddr>() {
        Ok(ip) => SanType::IpAddress(ip),
        Err(_) => SanType::DnsName(host.try_into()?),
    })
}

impl CertificateAuthority {
    /// A new self-signed CA (path length 0: it signs only end-entity certificates).
    pub fn generate(name: &str, validity_days: u32) -> Result<Self, PkiError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name(name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        validity(&mut params, validity_days);
        let cert = params.self_signed(&key)?;
        let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());
        Ok(Self { issuer: Issuer::new(params, key), cert_pem, key_pem })
    }

    /// Loads an existing CA from its PEM certificate and key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let bad = |what: String| PkiError::BadCa(what);
        let key = KeyPair::from_pem(key_pem).map_err(|e| bad(format!("private key: {e}")))?;
        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| bad(format!("certificate is not PEM: {e}")))?;
        let (_, cert) =
            x509_parser::parse_x509_certificate(&der).map_err(|e| bad(format!("certificate: {e}")))?;
        // rcgen takes any certificate and key on trust; a mismatch would only show later, as
        // certificates that no peer can verify.
        if !cert.is_ca() {
            return Err(bad(format!(
                "certificate of '{}' is not a CA (no BasicConstraints CA)",
                cert.subject()
            )));
        }
        if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(bad(format!(
                "the private key does not belong to the certificate of '{}'",
                cert.subject()
            )));
        }
        let issuer = Issuer::from_ca_cert_der(&der, key).map_err(|e| bad(format!("certificate: {e}")))?;
        Ok(Self { issuer, cert_pem: cert_pem.to_owned(), key_pem: key_pem.to_owned() })
    }

    /// The CA certificate (PEM).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key (PEM).
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    fn issue(
        &self,
        name: String,
        uri: String,
        hosts: &[String],
        usages: Vec<ExtendedKeyUsagePurpose>,
        validity_days: u32,
    ) -> Result<CertifiedKey, PkiError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name(&name);
        params.subject_alt_names = std::iter::once(Ok(SanType::URI(uri.try_into()?)))
            .chain(hosts.iter().map(|h| host_san(h)))
            .collect::<Result<_, PkiError>>()?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = usages;
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial());
        validity(&mut params, validity_days);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(CertifiedKey { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// A node's peer certificate, used as TLS server and client: its identity URI plus a SAN per
    /// host it is reached by.
    pub fn issue_node(
        &self,
        network: &str,
        code: NodeCode,
        hosts: &[String],
        validity_days: u32,
    ) -> Result<CertifiedKey, PkiError> {
        crate::domain::identity::validate_network_name(network)?;
        let usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(format!("hanoi247 node {code}"), node_uri(network, code), hosts, usages, validity_days)
    }

    /// The desk listener's server certificate (issued by the node's local CA).
    pub fn issue_desk_server(
        &self,
        network: &str,
        code: NodeCode,
        hosts: &[String],
        validity_days: u32,
    ) -> Result<CertifiedKey, PkiError> {
        crate::domain::identity::validate_network_name(network)?;
        let usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(format!("hanoi247 desk {code}"), node_uri(network, code), hosts, usages, validity_days)
    }

    /// A desk client's certificate (issued by the node's local CA).
    pub fn issue_client(
        &self,
        network: &str,
        node: NodeCode,
        name: &str,
        validity_days: u32,
    ) -> Result<CertifiedKey, PkiError> {
        crate::domain::identity::validate_network_name(network)?;
        crate::domain::identity::validate_client_name(name)?;
        let usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let uri = client_uri(network, node, name);
        self.issue(format!("hanoi247 client {name}@{node}"), uri, &[], usages, validity_days)
    }
}

/// A fresh random serial number: 16 random bytes, the top bit clear so that it stays positive.
/// Random rather than rcgen's default (a digest of the public key), so that two certificates for
/// the same key still differ and revoking one never revokes the other.
fn random_serial() -> rcgen::SerialNumber {
    let mut bytes: Vec<u8> = std::iter::repeat_with(|| fastrand::u8(..)).take(16).collect();
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    rcgen::SerialNumber::from_slice(&bytes)
}

/// Lifetime (nextUpdate) of the revocation lists `init` and `certs revoke` sign. Nodes do not
/// refuse a CRL past its nextUpdate (that would lock every client out at once); other tools may.
pub const CRL_VALIDITY_DAYS: i64 = 365;

/// One entry of a certificate revocation list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    /// The certificate's serial number (big-endian bytes, no leading zero byte).
    pub serial: Vec<u8>,
    /// When it was revoked.
    pub revoked_at: OffsetDateTime,
}

/// What a revocation list says: its number and the certificates it lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationList {
    /// The CRL number (grows with every re-signing).
    pub number: u64,
    /// The revoked certificates.
    pub revoked: Vec<Revoked>,
}

/// Serial numbers as big-endian bytes without leading zero bytes, so that the same number
/// compares equal whichever encoder wrote it.
fn canonical_serial(bytes: &[u8]) -> Vec<u8> {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    bytes[start..].to_vec()
}

/// The serial number of a PEM certificate and the subject of its issuer (DER).
pub fn serial_and_issuer(cert_pem: &str) -> Result<(Vec<u8>, Vec<u8>), PkiError> {
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|e| PkiError::BadCrl(format!("certificate is not PEM: {e}")))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| PkiError::BadCrl(format!("certificate: {e}")))?;
    Ok((canonical_serial(cert.raw_serial()), cert.issuer().as_raw().to_vec()))
}

/// The DER subject of a PEM certificate (for a CA: what the certificates it issued name as
/// their issuer).
pub fn subject_of(cert_pem: &str) -> Result<Vec<u8>, PkiError> {
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|e| PkiError::BadCa(format!("certificate is not PEM: {e}")))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| PkiError::BadCa(format!("certificate: {e}")))?;
    Ok(cert.subject().as_raw().to_vec())
}

/// Parses a hex serial number as printed by `certs issue` or `openssl x509 -serial` (colons and a
/// `0x` prefix allowed).
pub fn parse_serial(text: &str) -> Option<Vec<u8>> {
    let digits: String = text.trim().trim_start_matches("0x").chars().filter(|c| *c != ':').collect();
    if digits.is_empty() || digits.len() > 40 {
        return None;
    }
    // openssl may print an odd number of digits; a leading zero nibble keeps the value.
    let padded = if digits.len() % 2 == 1 { format!("0{digits}") } else { digits };
    let bytes = hex::decode(padded).ok()?;
    Some(canonical_serial(&bytes))
}

/// A serial number in upper-case hex, the way `openssl x509 -serial` prints it.
pub fn format_serial(serial: &[u8]) -> String {
    hex::encode_upper(serial)
}

impl CertificateAuthority {
    /// The DER subject of this CA (what a certificate it issued names as issuer).
    pub fn subject_der(&self) -> Result<Vec<u8>, PkiError> {
        subject_of(&self.cert_pem)
    }

    /// A revocation list signed by this CA (PEM), valid from now.
    pub fn sign_revocation_list(&self, list: &RevocationList) -> Result<String, PkiError> {
        let now = OffsetDateTime::now_utc();
        self.sign_revocation_list_between(list, now, now + Duration::days(CRL_VALIDITY_DAYS))
    }

    /// A revocation list signed by this CA (PEM) with the given thisUpdate and nextUpdate (a
    /// list already past its nextUpdate, to rehearse the `[tls] crl_stale` policy).
    pub fn sign_revocation_list_between(
        &self,
        list: &RevocationList,
        this_update: OffsetDateTime,
        next_update: OffsetDateTime,
    ) -> Result<String, PkiError> {
        let params = rcgen::CertificateRevocationListParams {
            this_update,
            next_update,
            crl_number: list.number.into(),
            issuing_distribution_point: None,
            revoked_certs: list
                .revoked
                .iter()
                .map(|r| rcgen::RevokedCertParams {
                    serial_number: rcgen::SerialNumber::from_slice(&r.serial),
                    revocation_time: r.revoked_at,
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer)?.pem()?)
    }

    /// Reads a revocation list (PEM) and checks this CA signed it.
    pub fn read_revocation_list(&self, crl_pem: &str) -> Result<RevocationList, PkiError> {
        let bad = |what: String| PkiError::BadCrl(what);
        let der = rustls::pki_types::CertificateRevocationListDer::from_pem_slice(crl_pem.as_bytes())
            .map_err(|e| bad(format!("not a PEM CRL: {e}")))?;
        let (_, crl) = x509_parser::parse_x509_crl(der.as_ref()).map_err(|e| bad(format!("CRL: {e}")))?;
        let ca_der = CertificateDer::from_pem_slice(self.cert_pem.as_bytes())
            .map_err(|e| PkiError::BadCa(format!("certificate is not PEM: {e}")))?;
        let (_, ca) = x509_parser::parse_x509_certificate(&ca_der)
            .map_err(|e| PkiError::BadCa(format!("certificate: {e}")))?;
        if crl.issuer().as_raw() != ca.subject().as_raw() || crl.verify_signature(ca.public_key()).is_err() {
            return Err(bad(format!(
                "the CRL of '{}' is not signed by the CA '{}'",
                crl.issuer(),
                ca.subject()
            )));
        }
        let number = crl
            .crl_number()
            .and_then(|n| {
                let bytes = canonical_serial(&n.to_bytes_be());
                (bytes.len() <= 8).then(|| bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
            })
            .ok_or_else(|| bad("the CRL has no CRL number (or one past 2^64)".into()))?;
        let revoked = crl
            .iter_revoked_certificates()
            .map(|r| {
                let revoked_at = OffsetDateTime::from_unix_timestamp(r.revocation_date.timestamp())
                    .map_err(|e| bad(format!("revocation date: {e}")))?;
                Ok(Revoked { serial: canonical_serial(r.raw_serial()), revoked_at })
            })
            .collect::<Result<_, PkiError>>()?;
        Ok(RevocationList { number, revoked })
    }

    /// Adds `serial` to the revocation list `crl_pem` (signed by this CA) and signs the result
    /// with the next CRL number. Returns the new PEM, or `None` when `serial` was already listed.
    pub fn revoke(&self, crl_pem: &str, serial: &[u8]) -> Result<Option<String>, PkiError> {
        let mut list = self.read_revocation_list(crl_pem)?;
        let serial = canonical_serial(serial);
        if list.revoked.iter().any(|r| r.serial == serial) {
            return Ok(None);
        }
        list.revoked.push(Revoked { serial, revoked_at: OffsetDateTime::now_utc() });
        list.number += 1;
        self.sign_revocation_list(&list).map(Some)
    }
}

/// Writes `contents` through [`atomic_file::write`], naming `path` in the error whichever step
/// failed (the temp file's random name would mean nothing to the operator).
fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
    atomic_file::write(path, contents, mode)
        .map_err(|e| PkiError::Io { path: path.to_owned(), source: e.source })
}

/// Writes a private key PEM readable by its owner only (0600).
pub fn write_private_key(path: &Path, pem: &str) -> Result<(), PkiError> {
    write_atomically(path, pem.as_bytes(), atomic_file::PRIVATE)
}

/// Writes a certificate PEM (0644: certificates are public).
pub fn write_certificate(path: &Path, pem: &str) -> Result<(), PkiError> {
    write_atomically(path, pem.as_bytes(), atomic_file::PUBLIC)
}

/// Characters of PKCS#12 passwords: no look-alikes (0/O, 1/l/I), so a person can type one.
const PASSWORD_ALPHABET: &[u8; 32] = b"abcdefghijkmnpqrstuvwxyz23456789";

/// A certificate, the CA that issued it and its private key as a PKCS#12 file for importing
/// into a browser, encrypted (PBES2, AES-256, HMAC-SHA256) under a fresh random password of
/// 24 characters (120 bits). Returns the file and the password.
pub fn pkcs12(certified: &CertifiedKey, ca_pem: &str, name: &str) -> Result<(Vec<u8>, String), PkiError> {
    let fail = |what: &str, e: &dyn std::fmt::Display| PkiError::Pkcs12(format!("{what}: {e}"));
    let der = |pem: &str| {
        CertificateDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| fail("certificate", &e))
            .and_then(|der| p12_keystore::Certificate::from_der(&der).map_err(|e| fail("certificate", &e)))
    };
    let key_der = rustls::pki_types::PrivatePkcs8KeyDer::from_pem_slice(certified.key_pem.as_bytes())
        .map_err(|e| fail("private key", &e))?;
    let key = p12_keystore::PrivateKey::from_der(key_der.secret_pkcs8_der())
        .map_err(|e| fail("private key", &e))?;
    let leaf = der(&certified.cert_pem)?;
    // The key's id ties it to its certificate inside the file: a digest of the certificate.
    let key_id = ring::digest::digest(&ring::digest::SHA256, leaf.as_der()).as_ref().to_vec();
    let chain = p12_keystore::PrivateKeyChain::new(key_id, key, [leaf, der(ca_pem)?]);
    let mut store = p12_keystore::KeyStore::new();
    store.add_entry(name, p12_keystore::KeyStoreEntry::PrivateKeyChain(chain));
    let mut random = [0u8; 24];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random)
        .map_err(|_| PkiError::Pkcs12("no random bytes for the password".into()))?;
    let password: String =
        random.iter().map(|b| char::from(PASSWORD_ALPHABET[usize::from(b % 32)])).collect();
    let bytes = store.writer(&password).write().map_err(|e| fail("writing", &e))?;
    Ok((bytes, password))
}

/// Writes a PKCS#12 file and, beside it as `<file>.password`, its password; both 0600.
pub fn write_pkcs12(path: &Path, bytes: &[u8], password: &str) -> Result<(), PkiError> {
    write_atomically(path, bytes, atomic_file::PRIVATE)?;
    let mut password_path = path.as_os_str().to_owned();
    password_path.push(".password");
    write_atomically(Path::new(&password_path), format!("{password}\n").as_bytes(), atomic_file::PRIVATE)
}

/// Writes a public file (a signed directory, a public key) atomically, mode 0644.
pub fn write_public_file(path: &Path, contents: &str) -> Result<(), PkiError> {
    write_atomically(path, contents.as_bytes(), atomic_file::PUBLIC)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::identity::{Identity, identity_of_cert};
    use std::os::unix::fs::PermissionsExt;
    use x509_parser::certificate::X509Certificate;
    use x509_parser::extensions::GeneralName;

    fn der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    fn parse(der: &[u8]) -> X509Certificate<'_> {
        x509_parser::parse_x509_certificate(der).unwrap().1
    }

    fn common_name_of(cert: &X509Certificate<'_>) -> String {
        cert.subject().iter_common_name().next().unwrap().as_str().unwrap().to_owned()
    }

    /// (serverAuth, clientAuth)
    fn eku(cert: &X509Certificate<'_>) -> (bool, bool) {
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        (eku.server_auth, eku.client_auth)
    }

    fn vn() -> NodeCode {
        "VN".parse().unwrap()
    }

    #[test]
    fn a_new_ca_is_a_p256_ca_for_end_entities_only() {
        let ca = CertificateAuthority::generate("network CA", 10).unwrap();
        let ca_der = der(ca.cert_pem());
        let cert = parse(&ca_der);
        assert_eq!(common_name_of(&cert), "network CA");
        assert_eq!(cert.issuer(), cert.subject());
        let constraints = cert.basic_constraints().unwrap().unwrap().value;
        assert!(constraints.ca);
        assert_eq!(constraints.path_len_constraint, Some(0));
        let usage = cert.key_usage().unwrap().unwrap().value;
        assert!(usage.key_cert_sign() && usage.crl_sign() && usage.digital_signature());
        assert_eq!(
            cert.public_key().algorithm.algorithm,
            x509_parser::oid_registry::OID_KEY_TYPE_EC_PUBLIC_KEY
        );
        assert!(ca.key_pem().starts_with("-----BEGIN PRIVATE KEY-----"));

        // Valid from an hour back (clock skew) for the requested number of days.
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let validity = cert.validity();
        let back = now - validity.not_before.timestamp();
        assert!((3_590..=3_610).contains(&back), "{back}");
        let ahead = validity.not_after.timestamp() - now;
        assert!((10 * 86_400 - 10..=10 * 86_400).contains(&ahead), "{ahead}");
    }

    #[test]
    fn node_certificates_chain_to_their_ca_and_carry_the_identity() {
        let ca = CertificateAuthority::generate("network CA", 10).unwrap();
        let hosts = ["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
        let node = ca.issue_node("net", vn(), &hosts, 10).unwrap();
        let node_der = der(&node.cert_pem);
        assert_eq!(
            identity_of_cert(&node_der).unwrap(),
            Identity::Node { network: "net".into(), code: vn() }
        );
        let parsed = parse(&node_der);
        let ca_der = der(ca.cert_pem());
        let ca_parsed = parse(&ca_der);
        assert_eq!(parsed.issuer(), ca_parsed.subject());
        parsed.verify_signature(Some(ca_parsed.public_key())).unwrap();
        assert_eq!(common_name_of(&parsed), "hanoi247 node VN");
        assert_eq!(eku(&parsed), (true, true));
        assert!(!parsed.is_ca());
        let sans = &parsed.subject_alternative_name().unwrap().unwrap().value.general_names;
        assert!(sans.contains(&GeneralName::URI("spiffe://net/node/VN")));
        assert!(sans.contains(&GeneralName::DNSName("localhost")));
        assert!(sans.contains(&GeneralName::IPAddress(&[127, 0, 0, 1])));
        assert!(sans.contains(&GeneralName::IPAddress(&std::net::Ipv6Addr::LOCALHOST.octets())));
        // The key handed back is the one the certificate certifies.
        let key = KeyPair::from_pem(&node.key_pem).unwrap();
        assert_eq!(parsed.public_key().subject_public_key.data.as_ref(), key.public_key_raw());
    }

    #[test]
    fn desk_certificates_come_from_a_reloaded_local_ca() {
        let local = CertificateAuthority::generate("local CA VN", 10).unwrap();
        // A CA loaded back from its files signs certificates that verify the same way.
        let reloaded = CertificateAuthority::from_pem(local.cert_pem(), local.key_pem()).unwrap();
        assert_eq!(reloaded.cert_pem(), local.cert_pem());
        let local_der = der(local.cert_pem());
        let local_parsed = parse(&local_der);

        let server = reloaded.issue_desk_server("net", vn(), &["desk.example".into()], 10).unwrap();
        let server_der = der(&server.cert_pem);
        let server_parsed = parse(&server_der);
        server_parsed.verify_signature(Some(local_parsed.public_key())).unwrap();
        assert_eq!(server_parsed.issuer(), local_parsed.subject());
        assert_eq!(
            identity_of_cert(&server_der).unwrap(),
            Identity::Node { network: "net".into(), code: vn() }
        );
        assert_eq!(eku(&server_parsed), (true, false));

        let client = reloaded.issue_client("net", vn(), "alice", 10).unwrap();
        let client_der = der(&client.cert_pem);
        let client_parsed = parse(&client_der);
        client_parsed.verify_signature(Some(local_parsed.public_key())).unwrap();
        assert_eq!(client_parsed.issuer(), local_parsed.subject());
        assert_eq!(
            identity_of_cert(&client_der).unwrap(),
            Identity::Client { network: "net".into(), node: vn(), name: "alice".into() }
        );
        assert_eq!(common_name_of(&client_parsed), "hanoi247 client alice@VN");
        assert_eq!(eku(&client_parsed), (false, true));
    }

    #[test]
    fn a_ca_is_not_loaded_from_mismatched_or_wrong_files() {
        let ca = CertificateAuthority::generate("CA", 10).unwrap();
        let other = CertificateAuthority::generate("other CA", 10).unwrap();
        let err = CertificateAuthority::from_pem(ca.cert_pem(), other.key_pem()).err().unwrap();
        assert!(err.to_string().contains("does not belong"), "{err}");

        let leaf = ca.issue_node("net", vn(), &[], 10).unwrap();
        let err = CertificateAuthority::from_pem(&leaf.cert_pem, &leaf.key_pem).err().unwrap();
        assert!(err.to_string().contains("not a CA"), "{err}");

        assert!(matches!(CertificateAuthority::from_pem("junk", ca.key_pem()), Err(PkiError::BadCa(_))));
        assert!(matches!(CertificateAuthority::from_pem(ca.cert_pem(), "junk"), Err(PkiError::BadCa(_))));
    }

    #[test]
    fn bad_names_are_refused() {
        let ca = CertificateAuthority::generate("CA", 10).unwrap();
        assert!(matches!(ca.issue_client("net", vn(), "Alice Smith", 10), Err(PkiError::Identity(_))));
        assert!(matches!(ca.issue_node("Net!", vn(), &[], 10), Err(PkiError::Identity(_))));
        assert!(matches!(ca.issue_desk_server("", vn(), &[], 10), Err(PkiError::Identity(_))));
    }

    #[test]
    fn private_keys_are_written_0600_and_certificates_0644() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k.key");
        // An existing world-readable file must not lend its mode to the key replacing it.
        std::fs::write(&key, "old").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_private_key(&key, "secret").unwrap();
        assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(&key).unwrap(), "secret");

        let cert = dir.path().join("c.pem");
        write_certificate(&cert, "public").unwrap();
        write_certificate(&cert, "public again").unwrap();
        // The process umask may narrow 0644, never widen it.
        assert_eq!(std::fs::metadata(&cert).unwrap().permissions().mode() & 0o133, 0);
        assert_eq!(std::fs::read_to_string(&cert).unwrap(), "public again");

        // No temp files are left behind.
        let mut names: Vec<_> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        assert_eq!(names, ["c.pem", "k.key"]);
    }

    #[test]
    fn failed_writes_name_the_path_and_leave_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-dir").join("k.key");
        let err = write_private_key(&missing, "secret").unwrap_err();
        assert!(err.to_string().contains("no-such-dir"), "{err}");

        // Renaming over a directory fails after the temp file was written: it is removed.
        let taken = dir.path().join("taken");
        std::fs::create_dir_all(taken.join("inside")).unwrap();
        assert!(matches!(write_certificate(&taken, "pem"), Err(PkiError::Io { .. })));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

        assert!(matches!(write_private_key(Path::new("/"), "secret"), Err(PkiError::Io { .. })));
    }

    #[test]
    fn revoking_adds_the_serial_and_renumbers_the_crl() {
        let ca = CertificateAuthority::generate("local CA VN", 10).unwrap();
        let empty = ca.sign_revocation_list(&RevocationList { number: 1, revoked: Vec::new() }).unwrap();
        assert!(empty.starts_with("-----BEGIN X509 CRL-----"), "{empty}");
        assert_eq!(
            ca.read_revocation_list(&empty).unwrap(),
            RevocationList { number: 1, revoked: Vec::new() }
        );

        let alice = ca.issue_client("net", vn(), "alice", 10).unwrap();
        let bob = ca.issue_client("net", vn(), "bob", 10).unwrap();
        let (alice_serial, issuer) = serial_and_issuer(&alice.cert_pem).unwrap();
        assert_eq!(issuer, ca.subject_der().unwrap());
        let (bob_serial, _) = serial_and_issuer(&bob.cert_pem).unwrap();
        assert_ne!(alice_serial, bob_serial, "serials are random, never shared");

        let one = ca.revoke(&empty, &alice_serial).unwrap().expect("alice was not listed yet");
        let list = ca.read_revocation_list(&one).unwrap();
        assert_eq!(list.number, 2);
        assert_eq!(
            list.revoked.iter().map(|r| r.serial.clone()).collect::<Vec<_>>(),
            vec![alice_serial.clone()]
        );
        let age = OffsetDateTime::now_utc() - list.revoked[0].revoked_at;
        assert!(age < Duration::minutes(1), "{age}");
        assert!(ca.revoke(&one, &alice_serial).unwrap().is_none(), "already listed: nothing to sign");

        let two = ca.revoke(&one, &bob_serial).unwrap().unwrap();
        let list = ca.read_revocation_list(&two).unwrap();
        assert_eq!(list.number, 3);
        assert_eq!(list.revoked.len(), 2, "earlier entries are kept");

        // The CRL parses as a CRL of this CA for webpki too (what the nodes load).
        let crl_der =
            rustls::pki_types::CertificateRevocationListDer::from_pem_slice(two.as_bytes()).unwrap();
        let (_, parsed) = x509_parser::parse_x509_crl(crl_der.as_ref()).unwrap();
        let ca_der = der(ca.cert_pem());
        parsed.verify_signature(parse(&ca_der).public_key()).unwrap();
    }

    #[test]
    fn a_crl_of_another_ca_or_junk_is_refused() {
        let ca = CertificateAuthority::generate("network CA", 10).unwrap();
        let other = CertificateAuthority::generate("network CA", 10).unwrap();
        let foreign = other.sign_revocation_list(&RevocationList { number: 1, revoked: Vec::new() }).unwrap();
        // Same name, other key: the signature decides.
        let err = ca.read_revocation_list(&foreign).unwrap_err().to_string();
        assert!(err.contains("not signed by the CA"), "{err}");
        assert!(matches!(ca.revoke(&foreign, &[1, 2, 3]), Err(PkiError::BadCrl(_))));
        assert!(matches!(ca.read_revocation_list("junk"), Err(PkiError::BadCrl(_))));
        assert!(matches!(serial_and_issuer("junk"), Err(PkiError::BadCrl(_))));
    }

    #[test]
    fn serials_are_read_and_printed_as_openssl_does() {
        assert_eq!(parse_serial("0A:1B:ff"), Some(vec![0x0a, 0x1b, 0xff]));
        assert_eq!(parse_serial("0x00a1b"), Some(vec![0x0a, 0x1b]));
        assert_eq!(parse_serial("0A1BFF"), Some(vec![0x0a, 0x1b, 0xff]));
        assert_eq!(parse_serial(""), None);
        assert_eq!(parse_serial("xyz"), None);
        assert_eq!(parse_serial(&"1".repeat(41)), None);
        assert_eq!(format_serial(&[0x0a, 0x1b, 0xff]), "0A1BFF");
    }
}
