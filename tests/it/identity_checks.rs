//! Acceptance 6: a client with no certificate, one with a certificate from another CA, and a
//! peer that claims an origin other than its certificate's are refused; nothing is stored.

use std::sync::Arc;
use std::time::Duration;

use hanoi247::cli::desk_client;
use hanoi247::config::ClientConfig;
use hanoi247::proto::{DeliverRequest, GetRequest, ListInboxRequest};
use hanoi247::trust::tls::{self, Dial};

use crate::support::*;

/// The call failed at the TLS layer: with the node's alert (one of `reasons`), or, when hyper
/// notices the closed connection before it reads the alert, as "connection closed".
/// `handshake_alert` checks the alert itself without hyper in between.
fn assert_refused(result: Result<impl std::fmt::Debug, tonic::Status>, what: &str, reasons: &[&str]) {
    let status = result.expect_err(what);
    let text = hanoi247::peer::delivery::describe(&status);
    let ok = reasons.iter().any(|r| text.contains(r)) || text.contains("connection closed");
    assert!(ok, "{what}: unexpected refusal {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_desk_client_without_certificate_is_refused() {
    let mut net = Network::new(&["VN", "FR"]).await;
    net.start("VN").await;
    let client = ClientConfig::load(&net.client_config_path("VN")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in tls::load_certs(&client.ca).unwrap() {
        roots.add(cert).unwrap();
    }
    let mut config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let port = net.config("VN").listen.desk.port();
    let alert = handshake_alert(Arc::new(config.clone()), port).await;
    assert!(alert.contains("CertificateRequired"), "{alert}");
    // A fresh channel per call: on a reused one the second call can fail on the channel's own
    // reconnect state ("connection was not ready") before it reaches the node.
    assert_refused(
        desk_with_tls(&client, config.clone()).submit(preservation_request("FR")).await,
        "submit without a certificate",
        &["CertificateRequired"],
    );
    assert_refused(
        desk_with_tls(&client, config).list_inbox(ListInboxRequest::default()).await,
        "read without a certificate",
        &["CertificateRequired"],
    );
    let mut vn = net.desk("VN");
    assert!(outbox(&mut vn).await.is_empty(), "nothing stored");
    net.stop("VN").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_of_another_network_are_refused_on_both_listeners() {
    let mut net = Network::new(&["VN", "FR"]).await;
    let other = Network::named(&["VN", "FR"], "hanoi247-test").await;
    net.start("VN").await;
    net.start("FR").await;

    // A desk client whose certificate comes from another CA (same names, other keys).
    let ours = ClientConfig::load(&net.client_config_path("VN")).unwrap();
    let theirs = ClientConfig::load(&other.client_config_path("VN")).unwrap();
    let impostor = ClientConfig { cert: theirs.cert, key: theirs.key, ..ours };
    let impostor_tls = tls::client_config(&impostor.ca, &impostor.cert, &impostor.key).unwrap();
    let alert = handshake_alert(impostor_tls, net.config("VN").listen.desk.port()).await;
    assert!(alert.contains("DecryptError") || alert.contains("UnknownCA"), "{alert}");
    let mut impostor = desk_client::connect(&impostor).unwrap();
    assert_refused(
        impostor.submit(preservation_request("FR")).await,
        "desk client from another CA",
        &["DecryptError", "UnknownCA", "BadCertificate"],
    );

    // A node certificate from another network CA at FR's peer listener.
    let vn_config = net.config("VN");
    let other_vn = other.config("VN");
    let tls_config =
        tls::client_config(&vn_config.tls.network_ca, &other_vn.tls.cert, &other_vn.tls.key).unwrap();
    let dial = Dial {
        endpoint: format!("127.0.0.1:{}", net.config("FR").listen.peer.port()),
        expect: None,
        connect_timeout: Duration::from_secs(5),
        request_timeout: Some(Duration::from_secs(10)),
        observe: None,
    };
    let mut foreign_peer =
        hanoi247::proto::peer_service_client::PeerServiceClient::new(tls::channel(dial, tls_config).unwrap());
    let mut vn = net.desk("VN");
    let id = submit(&mut vn, preservation_request("FR")).await;
    let envelope = vn.get(GetRequest { id }).await.unwrap().into_inner().message.unwrap().envelope.unwrap();
    // Stop VN first so only the impostor could deliver it.
    net.stop("VN").await;
    let mut fr = net.desk("FR");
    let before = inbox(&mut fr).await.len();
    assert_refused(
        foreign_peer.deliver(DeliverRequest { envelopes: vec![envelope], ..Default::default() }).await,
        "peer from another CA",
        &["DecryptError", "UnknownCA", "BadCertificate"],
    );
    assert_eq!(inbox(&mut fr).await.len(), before, "nothing stored");
    net.stop("FR").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_claiming_another_origin_is_permission_denied() {
    let mut net = Network::new(&["VN", "FR", "DE"]).await;
    net.start("VN").await;
    let mut vn = net.desk("VN");
    let id = submit(&mut vn, preservation_request("FR")).await;
    let envelope = vn.get(GetRequest { id }).await.unwrap().into_inner().message.unwrap().envelope.unwrap();
    net.stop("VN").await;
    net.start("FR").await;

    // DE's genuine certificate, but the envelope says it comes from VN.
    let mut as_de = net.peer_client("DE", "FR");
    let status =
        as_de.deliver(DeliverRequest { envelopes: vec![envelope], ..Default::default() }).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains("origin 'VN'") && status.message().contains("DE"),
        "{}",
        status.message()
    );
    let mut fr = net.desk("FR");
    assert!(inbox(&mut fr).await.is_empty(), "nothing stored");

    // A desk client certificate (local CA) is no peer certificate.
    let fr_config = net.config("FR");
    let vn_client = ClientConfig::load(&net.client_config_path("VN")).unwrap();
    let tls_config = tls::client_config(&fr_config.tls.network_ca, &vn_client.cert, &vn_client.key).unwrap();
    let dial = Dial {
        endpoint: format!("127.0.0.1:{}", fr_config.listen.peer.port()),
        expect: None,
        connect_timeout: Duration::from_secs(5),
        request_timeout: Some(Duration::from_secs(10)),
        observe: None,
    };
    let alert = handshake_alert(Arc::clone(&tls_config), fr_config.listen.peer.port()).await;
    assert!(alert.contains("UnknownCA"), "{alert}");
    let mut desk_cert_as_peer =
        hanoi247::proto::peer_service_client::PeerServiceClient::new(tls::channel(dial, tls_config).unwrap());
    assert_refused(
        desk_cert_as_peer.hello(hanoi247::proto::HelloRequest::default()).await,
        "desk certificate at the peer listener",
        &["UnknownCA"],
    );
    net.stop("FR").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_missing_from_the_directory_is_refused() {
    let mut net = Network::new(&["VN", "FR", "DE"]).await;
    // FR's directory no longer lists DE (its certificate is still from the network CA).
    net.edit_directory("FR", |directory| directory.members.retain(|m| m.code != code("DE")));
    net.start("FR").await;

    let mut as_de = net.peer_client("DE", "FR");
    let status = as_de.hello(hanoi247::proto::HelloRequest::default()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("not in the directory"), "{}", status.message());
    let mut as_vn = net.peer_client("VN", "FR");
    as_vn.hello(hanoi247::proto::HelloRequest::default()).await.expect("a listed node is welcome");
    net.stop("FR").await;
}
