//! `hanoi247 init`: a ready loopback network — the network CA, per node its certificate, local
//! CA, desk certificate, client certificates and ready `node.toml` / `<name>.client.toml` files.
//!
//! Layout (see `certs/README.md`):
//!
//! ```text
//! DIR/network-ca.pem, network-ca.key        the network CA (signs node certificates)
//! DIR/network-ca.crl                         its revocation list (peers), shared by all nodes
//! DIR/secretariat.key, secretariat.pub       the secretariat's Ed25519 key (signs the directory)
//! DIR/directory.toml                         the signed directory: every node, its endpoint and
//!                                            its certificate's SHA-256
//! DIR/<cc>/node.toml                         the node's config
//! DIR/<cc>/node.pem, node.key                its peer identity spiffe://<network>/node/<CC>
//! DIR/<cc>/local-ca.pem, local-ca.key        its local CA (signs desk certificates)
//! DIR/<cc>/local-ca.crl                      its revocation list (desk clients)
//! DIR/<cc>/desk.pem, desk.key                its desk listener's server certificate
//! DIR/<cc>/<name>.pem, <name>.key            a desk client spiffe://<network>/node/<CC>/client/<name>
//! DIR/<cc>/<name>.client.toml                that client's config for the CLI
//! DIR/<cc>/<name>.p12, <name>.p12.password   the same certificate and key for a browser (console)
//! ```

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::domain::access::Role;
use crate::domain::identity::{self, NodeCode};
use crate::trust::pki::{self, CertificateAuthority, PkiError};

/// Lifetime of the certificates `init` makes.
pub const VALIDITY_DAYS: u32 = 365;
/// Names every certificate carries, so clients on this machine can reach the listeners.
const LOOPBACK_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// What `init` could not do.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// A certificate could not be made or written.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// A file could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The secretariat key or the directory could not be made.
    #[error(transparent)]
    Directory(#[from] crate::trust::directory::DirectoryError),
    /// The options do not describe a network.
    #[error("{0}")]
    Invalid(String),
}

/// One node to make, with its ports on 127.0.0.1.
#[derive(Debug, Clone)]
pub struct NodePlan {
    /// Its code.
    pub code: NodeCode,
    /// Its peer listener port.
    pub peer_port: u16,
    /// Its desk listener port.
    pub desk_port: u16,
    /// Its metrics listener port.
    pub metrics_port: u16,
    /// Its desk console port.
    pub console_port: u16,
}

/// Everything `init` needs.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// The output directory.
    pub out: PathBuf,
    /// The network name.
    pub network: String,
    /// The nodes, in order.
    pub nodes: Vec<NodePlan>,
    /// Desk clients as (node, name, role); a node with none gets `officer` (officer) and
    /// `operator` (operator).
    pub clients: Vec<(NodeCode, String, Role)>,
}

impl InitOptions {
    /// The ports of `init --base-port P`: the i-th node gets peer P+10i, desk P+10i+1, metrics
    /// P+10i+2 and console P+10i+3.
    pub fn with_base_port(
        out: PathBuf,
        network: String,
        codes: &[NodeCode],
        base_port: u16,
    ) -> Result<Self, InitError> {
        let nodes = codes
            .iter()
            .enumerate()
            .map(|(i, &code)| {
                let peer_port = u16::try_from(i * 10)
                    .ok()
                    .and_then(|offset| base_port.checked_add(offset))
                    .filter(|p| p.checked_add(3).is_some())
                    .ok_or_else(|| {
                        InitError::Invalid(format!(
                            "--base-port {base_port}: ports for node {code} exceed 65535"
                        ))
                    })?;
                Ok(NodePlan {
                    code,
                    peer_port,
                    desk_port: peer_port + 1,
                    metrics_port: peer_port + 2,
                    console_port: peer_port + 3,
                })
            })
            .collect::<Result<_, InitError>>()?;
        Ok(Self { out, network, nodes, clients: Vec::new() })
    }
}

/// What `init` made.
#[derive(Debug, Clone)]
pub struct InitReport {
    /// Each node's code and config file.
    pub node_configs: Vec<(NodeCode, PathBuf)>,
    /// Each client's node, name and config file.
    pub client_configs: Vec<(NodeCode, String, PathBuf)>,
}

impl InitReport {
    /// The config file of node `code`.
    pub fn node_config(&self, code: NodeCode) -> Option<&Path> {
        self.node_configs.iter().find(|(c, _)| *c == code).map(|(_, p)| p.as_path())
    }

    /// The config file of client `name` of node `code`.
    pub fn client_config_named(&self, code: NodeCode, name: &str) -> Option<&Path> {
        self.client_configs.iter().find(|(c, n, _)| *c == code && n == name).map(|(_, _, p)| p.as_path())
    }

    /// The config file of the first client of node `code`.
    pub fn client_config(&self, code: NodeCode) -> Option<&Path> {
        self.client_configs.iter().find(|(c, _, _)| *c == code).map(|(_, _, p)| p.as_path())
    }
}

/// Makes the network. Refuses to overwrite an existing network CA.
pub fn init_network(options: &InitOptions) -> Result<InitReport, InitError> {
    identity::validate_network_name(&options.network)
        .map_err(|e| InitError::Invalid(format!("--network: {e}")))?;
    if options.nodes.is_empty() {
        return Err(InitError::Invalid("--nodes: at least one node".into()));
    }
    for (i, node) in options.nodes.iter().enumerate() {
        if options.nodes[..i].iter().any(|n| n.code == node.code) {
            return Err(InitError::Invalid(format!("--nodes: {} is listed twice", node.code)));
        }
    }
    for (node, name, _) in &options.clients {
        identity::validate_client_name(name).map_err(|e| InitError::Invalid(format!("--clients: {e}")))?;
        check_client_file_name(name).map_err(|e| InitError::Invalid(format!("--clients: {e}")))?;
        if !options.nodes.iter().any(|n| n.code == *node) {
            return Err(InitError::Invalid(format!("--clients: {node}:{name} names a node not in --nodes")));
        }
    }
    let out = &options.out;
    if out.join("network-ca.key").exists() {
        return Err(InitError::Invalid(format!(
            "{} already holds a network CA; choose another --out (init never overwrites keys)",
            out.display()
        )));
    }
    create_dir(out)?;
    let hosts: Vec<String> = LOOPBACK_HOSTS.iter().map(|h| (*h).to_owned()).collect();
    let network_ca =
        CertificateAuthority::generate(&format!("hanoi247 network CA {}", options.network), VALIDITY_DAYS)?;
    pki::write_certificate(&out.join("network-ca.pem"), network_ca.cert_pem())?;
    pki::write_private_key(&out.join("network-ca.key"), network_ca.key_pem())?;
    write_empty_crl(&network_ca, &out.join("network-ca.crl"))?;

    let secretariat = crate::trust::directory::SecretariatKey::create(
        &out.join("secretariat.key"),
        &out.join("secretariat.pub"),
    )?;
    let public_key = secretariat.public_key().to_hex();
    let mut directory = crate::trust::directory::Directory::empty(&options.network);

    let mut report = InitReport { node_configs: Vec::new(), client_configs: Vec::new() };
    for node in &options.nodes {
        let dir = out.join(node.code.as_str().to_ascii_lowercase());
        create_dir(&dir)?;
        let certified = network_ca.issue_node(&options.network, node.code, &hosts, VALIDITY_DAYS)?;
        pki::write_certificate(&dir.join("node.pem"), &certified.cert_pem)?;
        pki::write_private_key(&dir.join("node.key"), &certified.key_pem)?;
        directory.upsert(member(node, crate::trust::directory::fingerprint_of_file(&dir.join("node.pem"))?));

        let local_ca =
            CertificateAuthority::generate(&format!("hanoi247 local CA {}", node.code), VALIDITY_DAYS)?;
        pki::write_certificate(&dir.join("local-ca.pem"), local_ca.cert_pem())?;
        pki::write_private_key(&dir.join("local-ca.key"), local_ca.key_pem())?;
        write_empty_crl(&local_ca, &dir.join("local-ca.crl"))?;
        let desk = local_ca.issue_desk_server(&options.network, node.code, &hosts, VALIDITY_DAYS)?;
        pki::write_certificate(&dir.join("desk.pem"), &desk.cert_pem)?;
        pki::write_private_key(&dir.join("desk.key"), &desk.key_pem)?;

        let mut clients: Vec<(&str, Role)> = options
            .clients
            .iter()
            .filter(|(code, _, _)| *code == node.code)
            .map(|(_, name, role)| (name.as_str(), *role))
            .collect();
        if clients.is_empty() {
            clients = vec![("officer", Role::Officer), ("operator", Role::Operator)];
        }
        for &(name, _) in &clients {
            let client = local_ca.issue_client(&options.network, node.code, name, VALIDITY_DAYS)?;
            pki::write_certificate(&dir.join(format!("{name}.pem")), &client.cert_pem)?;
            pki::write_private_key(&dir.join(format!("{name}.key")), &client.key_pem)?;
            let (p12, password) = pki::pkcs12(&client, local_ca.cert_pem(), name)?;
            pki::write_pkcs12(&dir.join(format!("{name}.p12")), &p12, &password)?;
            let path = dir.join(format!("{name}.client.toml"));
            write_file(&path, &client_toml(node, name))?;
            report.client_configs.push((node.code, name.to_owned(), path));
        }
        let path = dir.join("node.toml");
        let mut text = node_toml(&options.network, node, &clients);
        text.push_str(&directory_toml(&public_key));
        write_file(&path, &text)?;
        report.node_configs.push((node.code, path));
    }
    directory.sign(&secretariat);
    directory.write(&out.join("directory.toml"))?;
    Ok(report)
}

/// A node's entry in the loopback network's directory.
fn member(node: &NodePlan, certificate_sha256: String) -> crate::config::DirectoryEntry {
    crate::config::DirectoryEntry {
        code: node.code,
        name: format!("24/7 point of contact {}", node.code),
        endpoint: format!("127.0.0.1:{}", node.peer_port),
        languages: vec!["en".into()],
        request_types: Vec::new(),
        time_zone: "UTC".into(),
        phone: String::new(),
        certificate_sha256,
        next_certificate_sha256: String::new(),
    }
}

/// The `[directory]` table of every node.toml: the shared signed directory and the key.
fn directory_toml(public_key: &str) -> String {
    format!(
        r#"
# The signed directory: the members this node talks to. Reloaded on SIGHUP and when the file
# changes; a directory with a bad signature or an older version is refused (the one in use stays).
[directory]
file = "../directory.toml"
# The network secretariat's Ed25519 public key (DIR/secretariat.pub).
public_key = "{public_key}"

[reload]
# How often the directory file is looked at for changes; SIGHUP reloads at once.
poll_interval = "2s"

[retention]
# Lifecycle events (what `watch` replays) older than this are removed, looked for every
# `interval`; a watcher resuming from before them is told so. Messages and the audit log stay.
events = "30days"
interval = "1h"
# The content (texts, subjects) of a case closed (`hanoi247 close`) this long ago is removed;
# ids, states, times, digests, receipts, signatures and the audit log stay.
closed_content = "365days"

[store]
# Writes are durable in the write-ahead log (data_dir/wal); the database is checkpointed behind
# it this often and the log cut there.
checkpoint_interval = "2s"
"#
    )
}

/// Names of the node's own files in its directory: a desk client so named would overwrite them
/// (its certificate and key are written as `<name>.pem` and `<name>.key` beside them).
pub const RESERVED_CLIENT_NAMES: [&str; 4] = ["node", "desk", "local-ca", "network-ca"];

/// Refuses a client name whose files would replace the node's own.
pub fn check_client_file_name(name: &str) -> Result<(), String> {
    if RESERVED_CLIENT_NAMES.contains(&name) {
        return Err(format!(
            "client name '{name}' is taken by the node's own files ({name}.pem, {name}.key); choose another"
        ));
    }
    Ok(())
}

fn node_toml(network: &str, node: &NodePlan, clients: &[(&str, Role)]) -> String {
    let mut text = format!(
        r#"# hanoi247 node {code}: made by `hanoi247 init` for a loopback network.
# Run it with: hanoi247 node --config {lower}/node.toml
# Relative paths are relative to this file.

code = "{code}"
network = "{network}"
# The sled store; created on first start.
data_dir = "data"

[listen]
# Other nodes connect here (network CA client certificates).
peer = "127.0.0.1:{peer}"
# Desk officers, operators and agency systems connect here (local CA client certificates).
desk = "127.0.0.1:{desk}"

[metrics]
# Prometheus /metrics, /healthz and /readyz (plain HTTP: keep it on loopback or a private network).
listen = "127.0.0.1:{metrics}"

[console]
# The desk console for officers' browsers: https://127.0.0.1:{console}/ (local CA client
# certificates, as on the desk listener; import <name>.p12 into the browser).
listen = "127.0.0.1:{console}"

[deadlines]
# A request not acknowledged this long after its creation is OVERDUE at both ends.
flash = "15m"
immediate = "1h"
priority = "4h"
routine = "24h"

[tls]
network_ca = "../network-ca.pem"
cert = "node.pem"
key = "node.key"
local_ca = "local-ca.pem"
desk_cert = "desk.pem"
desk_key = "desk.key"
# Revocation lists (`hanoi247 certs revoke` adds to them). A certificate they list is refused at
# the handshake; the node rereads them, and its own certificates, on SIGHUP and when they change.
peer_crl = "../network-ca.crl"
client_crl = "local-ca.crl"

[delivery]
# First retry within this (equal jitter: between half of it and it), doubling up to retry_max.
retry_initial = "1s"
retry_max = "60s"
# Envelopes per Deliver call, and calls in flight per peer (stored in the order sent).
batch_size = 64
batches_in_flight = 4
# Lifetime of a request submitted without expires_at.
default_expiry = "7days"
# A peer that does not answer a call within this is treated as failed.
request_timeout = "10s"
connect_timeout = "5s"
"#,
        code = node.code,
        lower = node.code.as_str().to_ascii_lowercase(),
        peer = node.peer_port,
        desk = node.desk_port,
        metrics = node.metrics_port,
        console = node.console_port,
    );
    text.push_str("\n# Desk clients (the name in their certificate) and their roles:\n# officer, operator, agency or auditor. A client not listed here is refused.\n");
    for (name, role) in clients {
        let _ = write!(text, "[[clients]]\nname = \"{name}\"\nrole = \"{}\"\n", role.name());
    }
    text
}

fn client_toml(node: &NodePlan, name: &str) -> String {
    format!(
        r#"# Desk client "{name}" of node {code}: use with `hanoi247 <command> --config` this file.
endpoint = "127.0.0.1:{desk}"
# The node's local CA (it issued the desk listener's certificate).
ca = "local-ca.pem"
cert = "{name}.pem"
key = "{name}.key"
"#,
        code = node.code,
        desk = node.desk_port,
    )
}

/// An empty revocation list of `ca` (CRL number 1), for `certs revoke` to add to.
fn write_empty_crl(ca: &CertificateAuthority, path: &Path) -> Result<(), InitError> {
    let empty = pki::RevocationList { number: 1, revoked: Vec::new() };
    pki::write_certificate(path, &ca.sign_revocation_list(&empty)?)?;
    Ok(())
}

fn create_dir(path: &Path) -> Result<(), InitError> {
    std::fs::create_dir_all(path).map_err(|source| InitError::Io { path: path.to_owned(), source })
}

fn write_file(path: &Path, text: &str) -> Result<(), InitError> {
    std::fs::write(path, text).map_err(|source| InitError::Io { path: path.to_owned(), source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ClientConfig, NodeConfig};
    use rustls::pki_types::pem::PemObject;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_client_named_like_a_node_file_is_refused_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let codes: Vec<NodeCode> = ["VN"].iter().map(|c| c.parse().unwrap()).collect();
        for name in RESERVED_CLIENT_NAMES {
            let out = dir.path().join(name);
            let mut options =
                InitOptions::with_base_port(out.clone(), "test-net".into(), &codes, 20000).unwrap();
            options.clients.push((codes[0], name.into(), Role::Officer));
            let error = init_network(&options).unwrap_err().to_string();
            assert!(error.contains(&format!("client name '{name}' is taken")), "{error}");
            assert!(!out.exists(), "nothing written for {name}");
        }
    }

    #[test]
    fn makes_loadable_configs_and_private_keys() {
        let dir = tempfile::tempdir().unwrap();
        let codes: Vec<NodeCode> = ["VN", "FR"].iter().map(|c| c.parse().unwrap()).collect();
        let mut options =
            InitOptions::with_base_port(dir.path().join("net"), "test-net".into(), &codes, 20000).unwrap();
        options.clients.push((codes[1], "bob".into(), Role::Agency));
        let report = init_network(&options).unwrap();
        let vn = NodeConfig::load(report.node_config(codes[0]).unwrap()).unwrap();
        assert_eq!(vn.listen.peer.port(), 20000);
        assert_eq!(vn.listen.desk.port(), 20001);
        let public_key = crate::trust::directory::PublicKey::from_hex(&vn.directory.public_key).unwrap();
        let directory =
            crate::trust::directory::Directory::load_verified(&vn.directory.file, &public_key, "test-net")
                .unwrap();
        assert_eq!(directory.version, 1);
        assert_eq!(directory.member(codes[1]).unwrap().endpoint, "127.0.0.1:20010");
        let fingerprint = crate::trust::directory::fingerprint_of_file(&vn.tls.cert).unwrap();
        assert_eq!(directory.member(codes[0]).unwrap().certificate_sha256, fingerprint);
        assert_eq!(vn.console.listen.port(), 20003);
        let bob = ClientConfig::load(report.client_config(codes[1]).unwrap()).unwrap();
        assert!(bob.cert.ends_with("fr/bob.pem"));
        assert_eq!(report.client_configs.len(), 3, "VN gets the default officer and operator, FR gets bob");
        assert_eq!(
            NodeConfig::load(report.node_config(codes[1]).unwrap()).unwrap().role_of("bob"),
            Some(Role::Agency)
        );
        assert_eq!(vn.role_of("operator"), Some(Role::Operator));
        let mode = std::fs::metadata(dir.path().join("net/fr/bob.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        for file in ["net/fr/bob.p12", "net/fr/bob.p12.password"] {
            let mode = std::fs::metadata(dir.path().join(file)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
        let password = std::fs::read_to_string(dir.path().join("net/fr/bob.p12.password")).unwrap();
        let p12 = std::fs::read(dir.path().join("net/fr/bob.p12")).unwrap();
        let store = p12_keystore::KeyStore::from_pkcs12(
            &p12,
            password.trim_end(),
            p12_keystore::Pkcs12ImportPolicy::Strict,
        )
        .unwrap();
        let (_, chain) = store.private_key_chain().expect("the key with its certificates");
        let pem = std::fs::read_to_string(dir.path().join("net/fr/bob.pem")).unwrap();
        let der = rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        assert_eq!(chain.certs()[0].as_der(), der.as_ref(), "bob's certificate first, then the local CA");
        assert_eq!(chain.certs().len(), 2);
        assert!(
            p12_keystore::KeyStore::from_pkcs12(&p12, "wrong", p12_keystore::Pkcs12ImportPolicy::Strict)
                .is_err()
        );
        assert!(init_network(&options).is_err(), "never overwrites an existing CA");
    }
}
