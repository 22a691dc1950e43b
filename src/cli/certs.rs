//! `hanoi247 certs issue` and `hanoi247 certs revoke`: new certificates and revocations with the
//! dev CAs that `init` made, driven by a node's config (which names the CA files and the CRLs).
//! With an external CA the same steps are openssl commands (`certs/README.md`).

use std::path::{Path, PathBuf};

use crate::config::{ConfigError, NodeConfig};
use crate::trust::pki::{self, CertificateAuthority, PkiError, RevocationList};

/// Names every node certificate carries, so that nodes and clients on this machine reach it
/// (the same as `init`).
const LOOPBACK_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// What `certs` could not do.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    /// The node config could not be used.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A certificate or CRL could not be made, read or written.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The request cannot be done with this config.
    #[error("{0}")]
    Invalid(String),
    /// The signed directory could not be updated with a rotated certificate's fingerprint.
    #[error(transparent)]
    Directory(#[from] crate::trust::directory::DirectoryError),
}

/// Which of a node's two CAs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authority {
    /// The network CA: node (peer) certificates; its CRL is `tls.peer_crl`.
    Network,
    /// The node's local CA: desk client certificates; its CRL is `tls.client_crl`.
    Local,
}

/// What `certs issue` wrote.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The new certificate's serial number (hex, as `openssl x509 -serial` prints it).
    pub serial: String,
    /// The files written.
    pub files: Vec<PathBuf>,
    /// Something the operator still has to do, if anything.
    pub note: Option<String>,
}

/// What `certs revoke` did.
#[derive(Debug, Clone)]
pub struct Revocation {
    /// The revoked serial number (hex).
    pub serial: String,
    /// The CRL written.
    pub crl: PathBuf,
    /// The certificate was already listed (nothing written).
    pub already_listed: bool,
}

fn read(path: &Path) -> Result<String, CertsError> {
    std::fs::read_to_string(path).map_err(|source| CertsError::Io { path: path.to_owned(), source })
}

/// The CA certificate file, its key (next to it as `.key`, as `init` lays them out) and CRL.
fn authority(
    config: &NodeConfig,
    which: Authority,
) -> Result<(CertificateAuthority, Option<&Path>), CertsError> {
    let (cert, crl) = match which {
        Authority::Network => (&config.tls.network_ca, config.tls.peer_crl.as_deref()),
        Authority::Local => (&config.tls.local_ca, config.tls.client_crl.as_deref()),
    };
    let key = cert.with_extension("key");
    if !key.exists() {
        return Err(CertsError::Invalid(format!(
            "{} not found: `certs` signs with the dev CA that `init` made; with an external CA see certs/README.md",
            key.display()
        )));
    }
    Ok((CertificateAuthority::from_pem(&read(cert)?, &read(&key)?)?, crl))
}

/// A new certificate and key for the node of `config_path` from the network CA, written over
/// `tls.cert` and `tls.key` (rotation; the running node picks them up by itself). `hosts` are
/// added to the loopback names.
pub fn issue_node(config_path: &Path, hosts: &[String], days: u32) -> Result<Issued, CertsError> {
    let config = NodeConfig::load(config_path)?;
    let (ca, _) = authority(&config, Authority::Network)?;
    let all_hosts: Vec<String> =
        LOOPBACK_HOSTS.iter().map(|h| (*h).to_owned()).chain(hosts.iter().cloned()).collect();
    let certified = ca.issue_node(&config.network, config.code, &all_hosts, days)?;
    // The key first: a reload between the two writes fails the key check and keeps the old pair,
    // and the node's poller waits for the files to settle anyway.
    pki::write_private_key(&config.tls.key, &certified.key_pem)?;
    pki::write_certificate(&config.tls.cert, &certified.cert_pem)?;
    let (serial, _) = pki::serial_and_issuer(&certified.cert_pem)?;
    let mut files = vec![config.tls.cert.clone(), config.tls.key.clone()];
    let pin = repin_in_directory(&config)?;
    if let Some(directory) = &pin {
        files.push(directory.clone());
    }
    let pin_note = match pin {
        Some(_) => {
            "the directory now pins the new certificate (re-signed with the dev secretariat key)".to_owned()
        }
        None => format!(
            "the directory pins this node's certificate: the secretariat must run `hanoi247 directory add --code {} --cert <the new certificate> …` and `directory sign`, and publish the directory, or peers refuse the new certificate",
            config.code
        ),
    };
    Ok(Issued {
        serial: pki::format_serial(&serial),
        files,
        note: Some(format!(
            "{pin_note}; revoke the previous certificate once the node runs with the new one"
        )),
    })
}

/// In the layout `init` makes (the secretariat's key beside the directory file), pins the node's
/// new certificate in the directory and re-signs it, so peers accept the rotated certificate.
/// Returns the directory file when it did; a real network's secretariat keeps its key elsewhere.
fn repin_in_directory(config: &NodeConfig) -> Result<Option<PathBuf>, CertsError> {
    use crate::trust::directory::{Directory, SecretariatKey, fingerprint_of_file};
    let file = &config.directory.file;
    let key = file.with_file_name("secretariat.key");
    if !key.exists() {
        return Ok(None);
    }
    let mut directory = Directory::read(file)?;
    let Some(mut entry) = directory.member(config.code).cloned() else { return Ok(None) };
    entry.certificate_sha256 = fingerprint_of_file(&config.tls.cert)?;
    directory.upsert(entry);
    directory.sign(&SecretariatKey::load(&key)?);
    directory.write(file)?;
    Ok(Some(file.clone()))
}

/// A new desk client `name` of the node of `config_path` from its local CA: `<name>.pem`,
/// `<name>.key` and `<name>.client.toml` next to the node config (replacing an earlier
/// certificate of the same name).
pub fn issue_client(config_path: &Path, name: &str, days: u32) -> Result<Issued, CertsError> {
    crate::cli::init::check_client_file_name(name).map_err(CertsError::Invalid)?;
    let config = NodeConfig::load(config_path)?;
    let (ca, _) = authority(&config, Authority::Local)?;
    let certified = ca.issue_client(&config.network, config.code, name, days)?;
    let dir = config_path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let (cert, key, toml) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.client.toml")),
    );
    pki::write_private_key(&key, &certified.key_pem)?;
    pki::write_certificate(&cert, &certified.cert_pem)?;
    // Relative to the client config when the CA sits next to it, as `init` writes it.
    let ca_path = config.tls.local_ca.strip_prefix(dir).unwrap_or(&config.tls.local_ca);
    let mut desk = config.listen.desk;
    if desk.ip().is_unspecified() {
        desk.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let text = format!(
        "# Desk client \"{name}\" of node {code}: use with `hanoi247 <command> --config` this file.\nendpoint = \"{desk}\"\n# The node's local CA (it issued the desk listener's certificate).\nca = \"{ca}\"\ncert = \"{name}.pem\"\nkey = \"{name}.key\"\n",
        code = config.code,
        ca = ca_path.display(),
    );
    std::fs::write(&toml, text).map_err(|source| CertsError::Io { path: toml.clone(), source })?;
    let (serial, _) = pki::serial_and_issuer(&certified.cert_pem)?;
    let note = config.role_of(name).is_none().then(|| {
        format!(
            "{name} is not in [[clients]] of {}: add\n[[clients]]\nname = \"{name}\"\nrole = \"officer\"   # or operator, agency, auditor\nand restart the node",
            config_path.display()
        )
    });
    Ok(Issued { serial: pki::format_serial(&serial), files: vec![cert, key, toml], note })
}

/// What to revoke.
#[derive(Debug, Clone)]
pub enum RevokeTarget {
    /// The certificate in this PEM file (its issuer says which CRL).
    Certificate(PathBuf),
    /// A serial number issued by this CA.
    Serial(Vec<u8>, Authority),
}

/// Adds a certificate to the CRL of the CA that issued it (`tls.peer_crl` for the network CA,
/// `tls.client_crl` for the local CA) and re-signs the CRL with the next CRL number. Running
/// nodes that read the CRL refuse the certificate after SIGHUP or within seconds by themselves.
pub fn revoke(config_path: &Path, target: &RevokeTarget) -> Result<Revocation, CertsError> {
    let config = NodeConfig::load(config_path)?;
    let (serial, which) = match target {
        RevokeTarget::Serial(serial, which) => (serial.clone(), *which),
        RevokeTarget::Certificate(path) => {
            let (serial, issuer) = pki::serial_and_issuer(&read(path)?)?;
            let mut found = None;
            for which in [Authority::Network, Authority::Local] {
                let ca_file = match which {
                    Authority::Network => &config.tls.network_ca,
                    Authority::Local => &config.tls.local_ca,
                };
                if pki::subject_of(&read(ca_file)?)? == issuer {
                    found = Some(which);
                    break;
                }
            }
            let which = found.ok_or_else(|| {
                CertsError::Invalid(format!(
                    "{} was issued neither by the network CA nor by the local CA of {}",
                    path.display(),
                    config_path.display()
                ))
            })?;
            (serial, which)
        }
    };
    let (ca, crl) = authority(&config, which)?;
    let key_name = if which == Authority::Network { "tls.peer_crl" } else { "tls.client_crl" };
    let crl = crl.ok_or_else(|| {
        CertsError::Invalid(format!(
            "{key_name} is not set in {}: name the CRL file there (see deploy/node.example.toml)",
            config_path.display()
        ))
    })?;
    let current = if crl.exists() {
        read(crl)?
    } else {
        ca.sign_revocation_list(&RevocationList { number: 1, revoked: Vec::new() })?
    };
    let updated = ca.revoke(&current, &serial)?;
    if let Some(pem) = &updated {
        pki::write_certificate(crl, pem)?;
    }
    Ok(Revocation {
        serial: pki::format_serial(&serial),
        crl: crl.to_owned(),
        already_listed: updated.is_none(),
    })
}
