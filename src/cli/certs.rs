//! `hanoi247 certs issue`, `certs activate` and `certs revoke`: new certificates (a node's staged
//! beside the one in use, so that a rotation refuses no connection), and revocations with the
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

/// What `certs issue` (or `certs activate`) wrote.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The new certificate's serial number (hex, as `openssl x509 -serial` prints it).
    pub serial: String,
    /// The new certificate's SHA-256 (of its DER: what the directory pins).
    pub sha256: String,
    /// The serial and SHA-256 of the certificate it replaces, when there was one.
    pub previous: Option<(String, String)>,
    /// The files written.
    pub files: Vec<PathBuf>,
    /// What the operator has to do next, if anything.
    pub note: Option<String>,
    /// The new certificate is in use now (`certs activate`), not only issued.
    pub activated: bool,
}

impl Issued {
    /// What the command prints, line by line.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if let Some((serial, sha256)) = &self.previous {
            lines.push(format!("previous certificate: serial {serial}, SHA-256 {sha256}"));
        }
        let what = if self.activated { "in use now:" } else { "issued" };
        lines.push(format!("{what} serial {}, SHA-256 {}", self.serial, self.sha256));
        lines.extend(self.files.iter().map(|file| format!("wrote {}", file.display())));
        if let Some(note) = &self.note {
            lines.push(format!("next: {note}"));
        }
        lines
    }
}

/// `<dir>/<stem>.<tag>.<extension>` beside `path`: `node.pem` → `node.next.pem`.
pub fn beside(path: &Path, tag: &str) -> PathBuf {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let name = match path.extension() {
        Some(extension) => format!("{stem}.{tag}.{}", extension.to_string_lossy()),
        None => format!("{stem}.{tag}"),
    };
    path.with_file_name(name)
}

/// Serial and SHA-256 of the first certificate of a PEM text.
fn serial_and_sha256(cert_pem: &str) -> Result<(String, String), CertsError> {
    use rustls::pki_types::pem::PemObject as _;
    let (serial, _) = pki::serial_and_issuer(cert_pem)?;
    let der = rustls::pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|e| CertsError::Invalid(format!("not a PEM certificate: {e}")))?;
    Ok((pki::format_serial(&serial), crate::domain::identity::fingerprint(der.as_ref())))
}

/// The serial and SHA-256 of the certificate in `path`, if it holds one.
fn existing(path: &Path) -> Option<(String, String)> {
    std::fs::read_to_string(path).ok().and_then(|pem| serial_and_sha256(&pem).ok())
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

/// A new certificate and key for the node of `config_path` from the network CA, staged beside
/// `tls.cert` and `tls.key` as `<cert>.next.pem` and `<key>.next.key`: the node keeps presenting
/// its current certificate, so no peer refuses it while the directory does not pin the new one.
/// In the layout `init` makes (the secretariat's key beside the directory), the directory is
/// re-signed with the new certificate as the member's next pin; otherwise the note says what the
/// secretariat runs. [`activate_node`] then puts the new pair in use. `hosts` are added to the
/// loopback names.
pub fn issue_node(config_path: &Path, hosts: &[String], days: u32) -> Result<Issued, CertsError> {
    let config = NodeConfig::load(config_path)?;
    let (ca, _) = authority(&config, Authority::Network)?;
    let all_hosts: Vec<String> =
        LOOPBACK_HOSTS.iter().map(|h| (*h).to_owned()).chain(hosts.iter().cloned()).collect();
    let certified = ca.issue_node(&config.network, config.code, &all_hosts, days)?;
    let (next_cert, next_key) = (beside(&config.tls.cert, "next"), beside(&config.tls.key, "next"));
    pki::write_private_key(&next_key, &certified.key_pem)?;
    pki::write_certificate(&next_cert, &certified.cert_pem)?;
    let (serial, sha256) = serial_and_sha256(&certified.cert_pem)?;
    let mut files = vec![next_cert.clone(), next_key];
    let code = config.code;
    let activate = format!("hanoi247 certs activate --config {}", config_path.display());
    let note = match pin_next_in_directory(&config, &sha256)? {
        Some((directory, version)) => {
            files.push(directory.clone());
            format!(
                "{} version {version} pins this certificate as {code}'s next one, beside its current one. Once every node runs version {version} (`hanoi247 peers` on each), run `{activate}`",
                directory.display()
            )
        }
        None => format!(
            "send {} to the secretariat: it runs `hanoi247 directory rotate --code {code} --next-cert <that file>` and `hanoi247 directory sign`, and publishes the directory. Once every member runs that version, run `{activate}`",
            next_cert.display()
        ),
    };
    Ok(Issued {
        serial,
        sha256,
        previous: existing(&config.tls.cert),
        files,
        note: Some(note),
        activated: false,
    })
}

/// In the layout `init` makes (the secretariat's key beside the directory file), adds `sha256`
/// as the member's next pin and re-signs the directory. Returns the file and its new version
/// when it did; a real network's secretariat keeps its key elsewhere.
fn pin_next_in_directory(config: &NodeConfig, sha256: &str) -> Result<Option<(PathBuf, u64)>, CertsError> {
    use crate::trust::directory::{Directory, SecretariatKey};
    let file = &config.directory.file;
    let key = file.with_file_name("secretariat.key");
    if !key.exists() {
        return Ok(None);
    }
    let mut directory = Directory::read(file)?;
    if directory.member(config.code).is_none_or(|m| m.certificate_sha256.is_empty()) {
        return Ok(None);
    }
    directory.set_next_pin(config.code, sha256).map_err(CertsError::Invalid)?;
    directory.sign(&SecretariatKey::load(&key)?);
    directory.write(file)?;
    Ok(Some((file.clone(), directory.version)))
}

/// Puts the certificate that [`issue_node`] staged in use: the current `tls.cert` and `tls.key`
/// are kept as `<cert>.previous.pem` and `<key>.previous.key`, the staged pair takes their place
/// (key first), and the running node switches to it by itself within seconds (or on SIGHUP).
/// Refused when nothing is staged or the staged key does not match its certificate.
pub fn activate_node(config_path: &Path) -> Result<Issued, CertsError> {
    let config = NodeConfig::load(config_path)?;
    let (cert, key) = (&config.tls.cert, &config.tls.key);
    let (next_cert, next_key) = (beside(cert, "next"), beside(key, "next"));
    if !next_cert.exists() || !next_key.exists() {
        return Err(CertsError::Invalid(format!(
            "{} or {} not found: run `hanoi247 certs issue --config {} --node` first",
            next_cert.display(),
            next_key.display(),
            config_path.display()
        )));
    }
    crate::trust::tls::check_key_pair(&next_cert, &next_key)
        .map_err(|e| CertsError::Invalid(e.to_string()))?;
    let (new_cert_pem, new_key_pem) = (read(&next_cert)?, read(&next_key)?);
    let (serial, sha256) = serial_and_sha256(&new_cert_pem)?;
    let (previous_cert, previous_key) = (beside(cert, "previous"), beside(key, "previous"));
    pki::write_private_key(&previous_key, &read(key)?)?;
    pki::write_certificate(&previous_cert, &read(cert)?)?;
    // The key first: a reload between the two writes fails the key check and keeps the old pair,
    // and the node's poller waits for the files to settle anyway.
    pki::write_private_key(key, &new_key_pem)?;
    pki::write_certificate(cert, &new_cert_pem)?;
    for staged in [&next_cert, &next_key] {
        std::fs::remove_file(staged).map_err(|source| CertsError::Io { path: staged.clone(), source })?;
    }
    let previous = existing(&previous_cert);
    let code = config.code;
    let directory = config.directory.file.display();
    let revoke = previous.as_ref().map_or_else(String::new, |(serial, _)| {
        format!(
            "; then revoke the previous certificate: `hanoi247 certs revoke --config {} --serial {serial} --ca network`",
            config_path.display()
        )
    });
    let note = format!(
        "the node presents the new certificate within seconds (or after `kill -HUP <pid>`; its log says \"TLS material reloaded\"). Then the secretariat drops the previous pin: `hanoi247 directory rotate --file {directory} --code {code} --finish` and `hanoi247 directory sign`, and publishes the directory{revoke}"
    );
    Ok(Issued {
        serial,
        sha256,
        previous,
        files: vec![key.clone(), cert.clone(), previous_cert, previous_key],
        note: Some(note),
        activated: true,
    })
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
    let previous = existing(&cert);
    if previous.is_some() {
        // The previous pair stays usable until it is revoked: a client that has not picked up
        // the new files yet goes on with it.
        let (previous_cert, previous_key) = (beside(&cert, "previous"), beside(&key, "previous"));
        pki::write_private_key(&previous_key, &read(&key)?)?;
        pki::write_certificate(&previous_cert, &read(&cert)?)?;
    }
    pki::write_private_key(&key, &certified.key_pem)?;
    pki::write_certificate(&cert, &certified.cert_pem)?;
    // The browser's copy too, or the console keeps presenting the replaced certificate.
    let p12 = dir.join(format!("{name}.p12"));
    let (p12_bytes, password) = pki::pkcs12(&certified, ca.cert_pem(), name)?;
    pki::write_pkcs12(&p12, &p12_bytes, &password)?;
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
    let (serial, sha256) = serial_and_sha256(&certified.cert_pem)?;
    let note = if config.role_of(name).is_none() {
        Some(format!(
            "{name} is not in [[clients]] of {}: add\n[[clients]]\nname = \"{name}\"\nrole = \"officer\"   # or operator, agency, auditor\nand reload the node (`kill -HUP <pid>`; no restart needed)",
            config_path.display()
        ))
    } else {
        previous.as_ref().map(|(old_serial, _)| {
            format!(
                "{name}'s programs pick the new certificate up at their next connection (a running `watch` too); import {} into the browser (password in {}.password); then revoke the previous certificate: `hanoi247 certs revoke --config {} --serial {old_serial} --ca local`",
                p12.display(),
                p12.display(),
                config_path.display()
            )
        })
    };
    let mut password_file = p12.clone().into_os_string();
    password_file.push(".password");
    Ok(Issued {
        serial,
        sha256,
        previous,
        files: vec![cert, key, p12, PathBuf::from(password_file), toml],
        note,
        activated: false,
    })
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
