//! Who a certificate names: node codes and the SPIFFE-style identities in URI SANs
//! (`spiffe://<network>/node/<CC>` for nodes, `.../node/<CC>/client/<name>` for desk clients).

use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// A certificate or name that does not identify anyone we know how to trust.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// Not a two-letter code.
    #[error("'{0}' is not a node code: expected two letters such as VN")]
    BadCode(String),
    /// Not a usable network name.
    #[error(
        "'{0}' is not a network name: 1 to 63 characters of a-z, 0-9, '-' and '.', not starting or ending with '-' or '.'"
    )]
    BadNetwork(String),
    /// Not a usable client name.
    #[error("'{0}' is not a client name: 1 to 32 characters of a-z, 0-9, '_' and '-'")]
    BadClientName(String),
    /// A URI that is not one of our identities.
    #[error(
        "'{uri}' is not a hanoi247 identity: {reason} (expected spiffe://<network>/node/<CC>[/client/<name>])"
    )]
    BadUri {
        /// The URI as given.
        uri: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The certificate could not be parsed.
    #[error("certificate cannot be parsed: {0}")]
    BadCertificate(String),
    /// The certificate carries no identity.
    #[error("certificate has no spiffe:// URI SAN: it was not issued for a hanoi247 node or desk client")]
    NoUri,
    /// The certificate carries several identities, so none can be trusted.
    #[error("certificate has {0} spiffe:// URI SANs: exactly one is allowed")]
    ManyUris(usize),
}

/// A node's code (ISO 3166-1 alpha-2 style): two uppercase ASCII letters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeCode([u8; 2]);

impl NodeCode {
    /// The code as text, e.g. "VN".
    pub fn as_str(&self) -> &str {
        // Both bytes are ASCII uppercase letters by construction, hence valid UTF-8.
        std::str::from_utf8(&self.0).unwrap_or("??")
    }
}

impl FromStr for NodeCode {
    type Err = IdentityError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.as_bytes() {
            [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
                Ok(Self([a.to_ascii_uppercase(), b.to_ascii_uppercase()]))
            }
            _ => Err(IdentityError::BadCode(text.to_owned())),
        }
    }
}

impl fmt::Display for NodeCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for NodeCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for NodeCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for NodeCode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Who a certificate says its holder is.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Identity {
    /// A node of a network (peer certificates, issued by the network CA).
    Node {
        /// The network.
        network: String,
        /// The node.
        code: NodeCode,
    },
    /// A desk client of a node (issued by the node's local CA).
    Client {
        /// The network.
        network: String,
        /// The node it belongs to.
        node: NodeCode,
        /// Its name, e.g. "alice".
        name: String,
    },
}

impl Identity {
    /// Parses `spiffe://<network>/node/<CC>` or `spiffe://<network>/node/<CC>/client/<name>`.
    pub fn parse_uri(uri: &str) -> Result<Identity, IdentityError> {
        let bad = |reason: String| IdentityError::BadUri { uri: uri.to_owned(), reason };
        let rest =
            uri.strip_prefix("spiffe://").ok_or_else(|| bad("it does not start with spiffe://".into()))?;
        let parts: Vec<&str> = rest.split('/').collect();
        let (network, node, client) = match parts.as_slice() {
            [network, "node", code] => (*network, *code, None),
            [network, "node", code, "client", name] => (*network, *code, Some(*name)),
            _ => return Err(bad("the path is neither /node/<CC> nor /node/<CC>/client/<name>".into())),
        };
        validate_network_name(network).map_err(|e| bad(e.to_string()))?;
        // Codes in identities are canonical uppercase: accepting "vn" would give one node two names.
        if node.bytes().any(|b| !b.is_ascii_uppercase()) {
            return Err(bad(format!("node code '{node}' must be two uppercase letters such as VN")));
        }
        let code: NodeCode = node.parse().map_err(|e: IdentityError| bad(e.to_string()))?;
        match client {
            Some(name) => {
                validate_client_name(name).map_err(|e| bad(e.to_string()))?;
                Ok(Identity::Client { network: network.to_owned(), node: code, name: name.to_owned() })
            }
            None => Ok(Identity::Node { network: network.to_owned(), code }),
        }
    }

    /// The URI form.
    pub fn uri(&self) -> String {
        match self {
            Identity::Node { network, code } => node_uri(network, *code),
            Identity::Client { network, node, name } => client_uri(network, *node, name),
        }
    }

    /// The network this identity belongs to.
    pub fn network(&self) -> &str {
        match self {
            Identity::Node { network, .. } | Identity::Client { network, .. } => network,
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri())
    }
}

/// `spiffe://<network>/node/<CC>`.
pub fn node_uri(network: &str, code: NodeCode) -> String {
    format!("spiffe://{network}/node/{code}")
}

/// `spiffe://<network>/node/<CC>/client/<name>`.
pub fn client_uri(network: &str, node: NodeCode, name: &str) -> String {
    format!("spiffe://{network}/node/{node}/client/{name}")
}

/// A network name fit for a URI authority.
pub fn validate_network_name(name: &str) -> Result<(), IdentityError> {
    let chars_ok =
        name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    let ends_ok = !name.starts_with(['-', '.']) && !name.ends_with(['-', '.']);
    if (1..=63).contains(&name.len()) && chars_ok && ends_ok {
        Ok(())
    } else {
        Err(IdentityError::BadNetwork(name.to_owned()))
    }
}

/// A client name fit for a URI path segment and a file name.
pub fn validate_client_name(name: &str) -> Result<(), IdentityError> {
    let chars_ok =
        name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if (1..=32).contains(&name.len()) && chars_ok {
        Ok(())
    } else {
        Err(IdentityError::BadClientName(name.to_owned()))
    }
}

fn parse(der: &[u8]) -> Result<x509_parser::certificate::X509Certificate<'_>, IdentityError> {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, cert)| cert)
        .map_err(|e| IdentityError::BadCertificate(e.to_string()))
}

/// The identity in a DER certificate's URI SAN: exactly one spiffe:// URI must be present.
pub fn identity_of_cert(der: &[u8]) -> Result<Identity, IdentityError> {
    let cert = parse(der)?;
    let sans = cert.subject_alternative_name().map_err(|e| IdentityError::BadCertificate(e.to_string()))?;
    let uris: Vec<&str> = sans
        .map(|ext| ext.value.general_names.iter())
        .into_iter()
        .flatten()
        .filter_map(|name| match name {
            x509_parser::extensions::GeneralName::URI(uri) if uri.starts_with("spiffe://") => Some(*uri),
            _ => None,
        })
        .collect();
    match uris.as_slice() {
        [uri] => Identity::parse_uri(uri),
        [] => Err(IdentityError::NoUri),
        many => Err(IdentityError::ManyUris(many.len())),
    }
}

/// When a DER certificate stops being valid.
pub fn cert_not_after(der: &[u8]) -> Result<SystemTime, IdentityError> {
    let cert = parse(der)?;
    let seconds = cert.validity().not_after.timestamp();
    let seconds =
        u64::try_from(seconds).map_err(|_| IdentityError::BadCertificate("expiry before 1970".into()))?;
    Ok(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(seconds))
}

/// The secretariat's Ed25519 public key (32 bytes, written as 64 hex digits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    /// From 64 hex digits.
    pub fn from_hex(text: &str) -> Result<Self, String> {
        let bytes = hex::decode(text.trim()).map_err(|_| "not hex")?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| "an Ed25519 public key is 64 hex digits")?;
        Ok(Self(bytes))
    }

    /// From 64 hex digits, or from a file holding them.
    pub fn from_hex_or_file(value: &str) -> Result<Self, String> {
        match Self::from_hex(value) {
            Ok(key) => Ok(key),
            Err(_) => {
                let text = std::fs::read_to_string(value)
                    .map_err(|e| format!("'{value}' is neither 64 hex digits nor a readable file: {e}"))?;
                Self::from_hex(&text).map_err(|e| format!("{value}: {e}"))
            }
        }
    }

    /// As 64 hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// SHA-256 of a certificate's DER, as 64 lowercase hex digits (the directory pins node
/// certificates by it).
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, der))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    fn der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    #[test]
    fn codes_parse_and_print_uppercase() {
        let code: NodeCode = "vn".parse().unwrap();
        assert_eq!(code, "VN".parse().unwrap());
        assert_eq!(code.to_string(), "VN");
        assert_eq!(format!("{code:?}"), "VN");
        for bad in ["", "V", "VNM", "V1", " VN", "ñ", "é1"] {
            let err = bad.parse::<NodeCode>().unwrap_err();
            assert!(err.to_string().contains(&format!("'{bad}'")), "{err}");
        }
        assert_eq!(
            "V1".parse::<NodeCode>().unwrap_err().to_string(),
            "'V1' is not a node code: expected two letters such as VN"
        );
    }

    #[test]
    fn codes_serialize_as_strings() {
        let code: NodeCode = "fr".parse().unwrap();
        assert_eq!(serde_json::to_string(&code).unwrap(), "\"FR\"");
        assert_eq!(serde_json::from_str::<NodeCode>("\"de\"").unwrap().as_str(), "DE");
        let err = serde_json::from_str::<NodeCode>("\"D3\"").unwrap_err();
        assert!(err.to_string().contains("'D3' is not a node code"), "{err}");
    }

    #[test]
    fn uris_round_trip() {
        let vn: NodeCode = "VN".parse().unwrap();
        let node = Identity::parse_uri("spiffe://hanoi247-dev/node/VN").unwrap();
        assert_eq!(node, Identity::Node { network: "hanoi247-dev".into(), code: vn });
        assert_eq!(node.network(), "hanoi247-dev");
        assert_eq!(node.to_string(), node_uri("hanoi247-dev", vn));
        for uri in [
            "spiffe://hanoi247-dev/node/VN",
            "spiffe://net.example/node/FR/client/alice",
            "spiffe://n/node/DE/client/desk_2-b",
        ] {
            assert_eq!(Identity::parse_uri(uri).unwrap().uri(), uri);
        }
        let client = Identity::Client { network: "net".into(), node: vn, name: "bob".into() };
        assert_eq!(Identity::parse_uri(&client.uri()).unwrap(), client);
        assert_eq!(client.uri(), client_uri("net", vn, "bob"));
    }

    #[test]
    fn bad_uris_are_refused_with_a_reason() {
        for (bad, reason) in [
            ("https://x/node/VN", "spiffe://"),
            ("spiffe://net/node/vn", "uppercase"),
            ("spiffe://net/node/V1", "uppercase"),
            ("spiffe://net/node/VNM", "not a node code"),
            ("spiffe://net/node/VN/", "path"),
            ("spiffe://net/node/VN/client/", "client name"),
            ("spiffe://net/node/VN/client/Alice", "client name"),
            ("spiffe://net/node/VN/client/a/b", "path"),
            ("spiffe://net/nodes/VN", "path"),
            ("spiffe://-net/node/VN", "network name"),
            ("spiffe://Net/node/VN", "network name"),
            ("spiffe:///node/VN", "network name"),
        ] {
            let err = Identity::parse_uri(bad).unwrap_err().to_string();
            assert!(err.starts_with(&format!("'{bad}' is not a hanoi247 identity")), "{err}");
            assert!(err.contains(reason), "{bad}: {err}");
        }
    }

    #[test]
    fn network_and_client_names() {
        for good in ["a", "hanoi247-dev", "net.example", "0", &"a".repeat(63)] {
            validate_network_name(good).unwrap();
        }
        for bad in ["", "-a", "a-", ".a", "a.", "A", "a_b", "a/b", "a b", &"a".repeat(64)] {
            assert!(validate_network_name(bad).is_err(), "{bad}");
        }
        for good in ["a", "alice", "desk_2-b", &"z".repeat(32)] {
            validate_client_name(good).unwrap();
        }
        for bad in ["", "Alice", "a.b", "a b", "a/b", &"z".repeat(33)] {
            assert!(validate_client_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn identity_and_expiry_of_an_issued_certificate() {
        let ca = crate::trust::pki::CertificateAuthority::generate("test CA", 30).unwrap();
        let code: NodeCode = "FR".parse().unwrap();
        let issued = ca.issue_client("net", code, "bob", 30).unwrap();
        let client_der = der(&issued.cert_pem);
        assert_eq!(
            identity_of_cert(&client_der).unwrap(),
            Identity::Client { network: "net".into(), node: code, name: "bob".into() }
        );
        let expiry = cert_not_after(&client_der).unwrap();
        let days = expiry.duration_since(SystemTime::now()).unwrap().as_secs() / 86_400;
        assert!((29..=30).contains(&days), "{days}");

        let node = ca.issue_node("net", code, &["localhost".into()], 1).unwrap();
        assert_eq!(
            identity_of_cert(&der(&node.cert_pem)).unwrap(),
            Identity::Node { network: "net".into(), code }
        );
    }

    /// A certificate with the given URI SANs, made directly so that it can break our rules.
    fn cert_with_uris(uris: &[&str]) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        for uri in uris {
            params.subject_alt_names.push(rcgen::SanType::URI((*uri).try_into().unwrap()));
        }
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn certificates_must_name_exactly_one_identity() {
        let none = cert_with_uris(&["https://example.org/"]);
        assert_eq!(
            identity_of_cert(&none).unwrap_err().to_string(),
            "certificate has no spiffe:// URI SAN: it was not issued for a hanoi247 node or desk client"
        );
        let two = cert_with_uris(&["spiffe://net/node/VN", "spiffe://net/node/FR"]);
        assert!(matches!(identity_of_cert(&two), Err(IdentityError::ManyUris(2))));
        let other = cert_with_uris(&["https://example.org/", "spiffe://net/node/VN"]);
        assert_eq!(identity_of_cert(&other).unwrap().uri(), "spiffe://net/node/VN");
        assert!(matches!(
            identity_of_cert(&cert_with_uris(&["spiffe://net/node/vn"])),
            Err(IdentityError::BadUri { .. })
        ));
        assert!(matches!(identity_of_cert(b"not a certificate"), Err(IdentityError::BadCertificate(_))));
        assert!(matches!(cert_not_after(b"not a certificate"), Err(IdentityError::BadCertificate(_))));
    }
}
