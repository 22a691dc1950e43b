//! Making certificates with rcgen: the network CA, nodes' local CAs, node, desk-server and desk
//! client certificates, and writing them with safe file modes. All keys are ECDSA P-256.

use std::io::Write as _;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use time::{Duration, OffsetDateTime};

use crate::identity::{IdentityError, NodeCode, client_uri, node_uri};

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
        let key = KeyPair::from_pem(key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)?;
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
        crate::identity::validate_network_name(network)?;
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
        crate::identity::validate_network_name(network)?;
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
        crate::identity::validate_network_name(network)?;
        crate::identity::validate_client_name(name)?;
        let usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let uri = client_uri(network, node, name);
        self.issue(format!("hanoi247 client {name}@{node}"), uri, &[], usages, validity_days)
    }
}

/// Writes `contents` atomically with `mode` from the moment the file exists: a temp file in the
/// same directory, synced, then renamed over `path`.
fn write_atomically(path: &Path, contents: &str, mode: u32) -> Result<(), PkiError> {
    let io = |source| PkiError::Io { path: path.to_owned(), source };
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&temp)
        .map_err(io)?;
    file.write_all(contents.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&temp, path).map_err(io)
}

/// Writes a private key PEM readable by its owner only (0600).
pub fn write_private_key(path: &Path, pem: &str) -> Result<(), PkiError> {
    write_atomically(path, pem, 0o600)
}

/// Writes a certificate PEM (0644: certificates are public).
pub fn write_certificate(path: &Path, pem: &str) -> Result<(), PkiError> {
    write_atomically(path, pem, 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{Identity, identity_of_cert};
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    use std::os::unix::fs::PermissionsExt;

    fn der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    #[test]
    fn node_certificates_chain_to_their_ca_and_carry_the_identity() {
        let ca = CertificateAuthority::generate("network CA", 10).unwrap();
        let code: NodeCode = "VN".parse().unwrap();
        let node = ca.issue_node("net", code, &["localhost".into(), "127.0.0.1".into()], 10).unwrap();
        let node_der = der(&node.cert_pem);
        assert_eq!(identity_of_cert(&node_der).unwrap(), Identity::Node { network: "net".into(), code });
        let (_, parsed) = x509_parser::parse_x509_certificate(&node_der).unwrap();
        let ca_der = der(ca.cert_pem());
        let (_, ca_parsed) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        assert_eq!(parsed.issuer(), ca_parsed.subject());
        parsed.verify_signature(Some(ca_parsed.public_key())).unwrap();

        // A CA loaded back from its files signs certificates that verify the same way.
        let reloaded = CertificateAuthority::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
        let client = reloaded.issue_client("net", code, "alice", 10).unwrap();
        let client_der = der(&client.cert_pem);
        let (_, client_parsed) = x509_parser::parse_x509_certificate(&client_der).unwrap();
        client_parsed.verify_signature(Some(ca_parsed.public_key())).unwrap();
    }

    #[test]
    fn bad_names_are_refused() {
        let ca = CertificateAuthority::generate("CA", 10).unwrap();
        let code: NodeCode = "VN".parse().unwrap();
        assert!(ca.issue_client("net", code, "Alice Smith", 10).is_err());
        assert!(ca.issue_node("Net!", code, &[], 10).is_err());
    }

    #[test]
    fn private_keys_are_written_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.key");
        write_private_key(&path, "secret").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "secret");
    }
}
