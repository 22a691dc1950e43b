//! Issue 5 (TLS policy): TLS 1.2 clients, expired certificates and certificates without the
//! right URI SAN are refused, on the desk listener and the peer listener; nothing is stored.

use std::sync::Arc;

use hanoi247::config::ClientConfig;
use hanoi247::trust::tls;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::support::*;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca: &std::path::Path) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for cert in tls::load_certs(ca).unwrap() {
        roots.add(cert).unwrap();
    }
    roots
}

/// A client certificate signed by `ca` with the given URI SANs and validity, and its key.
fn certificate(
    ca_cert: &std::path::Path,
    ca_key: &std::path::Path,
    uris: &[String],
    not_after_days: i64,
) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let ca_key = KeyPair::from_pem(&std::fs::read_to_string(ca_key).unwrap()).unwrap();
    let issuer = Issuer::from_ca_cert_pem(&std::fs::read_to_string(ca_cert).unwrap(), ca_key).unwrap();
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "test client");
    params.distinguished_name = name;
    params.subject_alt_names = uris.iter().map(|u| SanType::URI(u.clone().try_into().unwrap())).collect();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(30);
    params.not_after = now + time::Duration::days(not_after_days);
    let cert = params.signed_by(&key, &issuer).unwrap();
    let key = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap();
    (cert.der().clone(), key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_1_2_expired_and_wrongly_named_certificates_are_refused() {
    let mut net = Network::new(&["VN", "FR"]).await;
    net.start("VN").await;
    let officer = ClientConfig::load(&net.client_config_path("VN")).unwrap();
    let node_dir = officer.ca.parent().unwrap().to_owned();
    let (ca_cert, ca_key) = (node_dir.join("local-ca.pem"), node_dir.join("local-ca.key"));
    let network = &net.network;

    // TLS 1.2 only, with a perfectly good client certificate: no common protocol version.
    let certs = tls::load_certs(&officer.cert).unwrap();
    let key = tls::load_key(&officer.key).unwrap();
    let tls12 = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots(&officer.ca))
        .with_client_auth_cert(certs, key)
        .unwrap();
    let desk_port = net.config("VN").listen.desk.port();
    let alert = handshake_alert(Arc::new(tls12.clone()), desk_port).await;
    assert!(alert.contains("ProtocolVersion"), "{alert}");
    desk_with_tls(&officer, tls12).submit(preservation_request("FR")).await.unwrap_err();

    let client_with = |uris: &[String], days: i64| {
        let (cert, key) = certificate(&ca_cert, &ca_key, uris, days);
        rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots(&officer.ca))
            .with_client_auth_cert(vec![cert], key)
            .unwrap()
    };

    // Expired yesterday, otherwise the officer's very identity.
    let officer_uri = format!("spiffe://{network}/node/VN/client/officer");
    let expired = client_with(std::slice::from_ref(&officer_uri), -1);
    let alert = handshake_alert(Arc::new(expired.clone()), desk_port).await;
    assert!(alert.contains("CertificateExpired"), "{alert}");
    desk_with_tls(&officer, expired).submit(preservation_request("FR")).await.unwrap_err();

    // From the right CA but naming a client of another node, or nobody at all.
    for uris in [vec![format!("spiffe://{network}/node/FR/client/officer")], vec![]] {
        let status = desk_with_tls(&officer, client_with(&uris, 30))
            .submit(preservation_request("FR"))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{uris:?}: {status:?}");
    }
    // A node identity is no desk client either.
    let node_uri = vec![format!("spiffe://{network}/node/VN")];
    let status = desk_with_tls(&officer, client_with(&node_uri, 30))
        .submit(preservation_request("FR"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");

    let mut operator = net.desk_as("VN", "operator");
    assert!(outbox(&mut operator).await.is_empty(), "nothing stored");
    net.stop("VN").await;
}
