//! Issue 14, bullets 8 and 9: a tamper-evident tail and the trust edges an operator relies on.
//! The audit head is signed and witnessed by peers in `Hello`, so a log cut short on disk (its
//! head key rewritten to match) is named by `audit verify` with the head a peer witnessed;
//! backups carry a signature `restore` checks; a CRL past its nextUpdate follows the
//! `[tls] crl_stale` policy; metrics stay on loopback; the compose preparation keeps keys private.

use std::process::Command;

use hanoi247::domain::access::Role;
use hanoi247::proto::ListAuditResponse;
use hanoi247::store::audit::ChainHead;
use prost::Message as _;

use crate::operator_view::metric;
use crate::support::*;

/// Runs `hanoi247 <args> --config <config>`: (success, stdout, stderr).
fn cli(config: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let output =
        Command::new(env!("CARGO_BIN_EXE_hanoi247")).args(args).arg("--config").arg(config).output().unwrap();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (output.status.success(), text(&output.stdout), text(&output.stderr))
}

/// The `audit verify --json` report of the node behind `auditor`.
fn verify_json(auditor: &std::path::Path) -> (bool, serde_json::Value, String) {
    let (ok, stdout, stderr) = cli(auditor, &["audit", "verify", "--json"]);
    let report = serde_json::from_str(&stdout).unwrap_or(serde_json::Value::Null);
    (ok, report, stderr)
}

/// The head sequence number FR witnessed of this log, as `audit verify --json` reports it.
fn witnessed_by_fr(report: &serde_json::Value) -> Option<u64> {
    let witnessed = report["witnessed"].as_array()?;
    let fr = witnessed.iter().find(|w| w["peer"] == "FR")?;
    ChainHead::parse(fr["head"].as_str()?).ok().map(|head| head.sequence)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_cut_short_on_disk_is_named_with_the_head_a_peer_witnessed() {
    let clients = [("VN", "duty", Role::Officer), ("VN", "audit", Role::Auditor)];
    let mut net = Network::with_clients(&["VN", "FR"], &clients).await;
    net.start("FR").await;
    let auditor = net.client_config_path_of("VN", "audit");
    let vn_process = net.spawn("VN").await;
    let mut duty = net.desk_as("VN", "duty");
    for _ in 0..4 {
        submit(&mut duty, preservation_request("FR")).await;
    }
    let (ok, report, stderr) = verify_json(&auditor);
    assert!(ok, "{report}\n{stderr}");
    let before_restart = ChainHead::parse(report["head"].as_str().unwrap()).unwrap().sequence;
    assert!(before_restart > 10, "enough records to cut: {report}");

    // A restarted node says Hello at once: FR witnesses the head it has now, and answers with it.
    assert!(vn_process.terminate().await.success());
    let vn_process = net.spawn("VN").await;
    let mut witnessed = 0;
    eventually("FR witnessed VN's head after the restart", async || {
        let (ok, report, _) = verify_json(&auditor);
        witnessed = witnessed_by_fr(&report).unwrap_or(0);
        ok && witnessed >= before_restart
    })
    .await;

    // Someone with the files deletes the tail and rewrites the head key to the new last record,
    // so the chain is whole and ends where it now ends.
    assert!(vn_process.terminate().await.success());
    let data_dir = net.config("VN").data_dir;
    let kept = 3u64;
    {
        let db = sled::open(&data_dir).unwrap();
        let last = db.get(hanoi247::store::audit_record_key(kept)).unwrap().unwrap();
        let last = ListAuditResponse::decode(last.as_ref()).unwrap();
        let mut removed = 0;
        for item in db.scan_prefix(b"h") {
            let (key, _) = item.unwrap();
            if u64::from_be_bytes(key[1..9].try_into().unwrap()) > kept {
                db.remove(&key).unwrap();
                removed += 1;
            }
        }
        assert!(removed as u64 >= witnessed - kept, "removed {removed}");
        let head = ChainHead { sequence: kept, hash: last.hash.clone().try_into().unwrap() };
        db.insert(b"caudit", head.to_bytes().as_slice()).unwrap();
        db.flush().unwrap();
    }
    let _vn_process = net.spawn("VN").await;

    // The chain alone is intact; against what FR witnessed, the cut is named.
    let mut stderr = String::new();
    eventually("audit verify names the cut with FR's witnessed head", async || {
        let (ok, _, err) = cli(&auditor, &["audit", "verify"]);
        stderr = err;
        !ok && stderr.contains("FR witnessed head")
    })
    .await;
    assert!(stderr.contains(&format!("FR witnessed head {witnessed} signed at")), "{stderr}");
    assert!(stderr.contains("the log ends at record"), "{stderr}");
    assert!(stderr.contains("were deleted"), "{stderr}");

    // FR kept the older, longer head and counts the rollback; both nodes still serve.
    let fr_metrics = net.config("FR").metrics.listen.port();
    let rollbacks = tokio::task::spawn_blocking(move || {
        metric(fr_metrics, "hanoi247_audit_head_rollbacks_total{peer=\"VN\"}")
    })
    .await
    .unwrap();
    assert!(rollbacks.is_some_and(|n| n >= 1.0), "{rollbacks:?}");
    let mut duty = net.desk_as("VN", "duty");
    let id = submit(&mut duty, preservation_request("FR")).await;
    wait_state(&mut duty, &id, hanoi247::proto::MessageState::Delivered).await;
    net.stop("FR").await;

    // FR keeps the head in its store (`w` + node code), signed by VN, not only in memory.
    let db = sled::open(net.config("FR").data_dir).unwrap();
    let kept = db.get(b"wVN").unwrap().expect("FR stored the head it witnessed of VN");
    let kept = hanoi247::proto::SignedAuditHead::decode(kept.as_ref()).unwrap();
    assert_eq!((kept.node.as_str(), kept.sequence), ("VN", witnessed));
    let vn_cert = hanoi247::trust::tls::load_certs(&net.config("VN").tls.cert).unwrap();
    hanoi247::trust::witness::verify_audit_head(&kept, code("VN"), vn_cert[0].as_ref()).unwrap();
}

/// The backup file's parts: content (header and records), SHA-256, signature.
fn split_backup(bytes: &[u8]) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let signature_len = usize::from(u16::from_be_bytes([bytes[bytes.len() - 2], bytes[bytes.len() - 1]]));
    let signature_at = bytes.len() - 2 - signature_len;
    let digest_at = signature_at - 32;
    (
        bytes[..digest_at].to_vec(),
        bytes[digest_at..signature_at].to_vec(),
        bytes[signature_at..bytes.len() - 2].to_vec(),
    )
}

fn join_backup(content: &[u8], digest: &[u8], signature: &[u8]) -> Vec<u8> {
    let length = u16::try_from(signature.len()).unwrap().to_be_bytes();
    [content, digest, signature, &length].concat()
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    hanoi247::trust::signing::sha256(bytes).to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_refuses_a_backup_changed_or_signed_by_another_key() {
    let mut net = Network::new(&["VN", "FR"]).await;
    net.start("VN").await;
    net.start("FR").await;
    let mut officer = net.desk("VN");
    let id = submit(&mut officer, preservation_request("FR")).await;
    let operator = net.client_config_path_of("VN", "operator");
    let file = net.dir().join("vn.backup");
    let (ok, stdout, stderr) = cli(&operator, &["backup", "--out", file.to_str().unwrap()]);
    assert!(ok, "{stdout}\n{stderr}");
    let good = std::fs::read(&file).unwrap();
    let (content, digest, signature) = split_backup(&good);
    assert_eq!(digest, sha256(&content), "the layout is content, SHA-256, signature, length");
    assert!(!signature.is_empty(), "the node signed its backup");

    let restore = |name: &str, bytes: &[u8]| {
        let input = net.dir().join(format!("{name}.backup"));
        std::fs::write(&input, bytes).unwrap();
        let target = net.dir().join(format!("restored-{name}"));
        let output = Command::new(env!("CARGO_BIN_EXE_hanoi247"))
            .args(["restore", "--in"])
            .arg(&input)
            .arg("--data-dir")
            .arg(&target)
            .arg("--cert")
            .arg(net.config("VN").tls.cert)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        (output.status.success(), stderr, target)
    };

    // A record changed and the SHA-256 recomputed: only the signature can tell.
    let mut forged = content.clone();
    let at = forged.len() - 10;
    forged[at] ^= 0x01;
    let (ok, stderr, target) = restore("recomputed", &join_backup(&forged, &sha256(&forged), &signature));
    assert!(!ok && stderr.contains("signature does not verify"), "{stderr}");
    assert!(!target.exists(), "nothing was restored");

    // A byte changed, checksum left: the SHA-256 says so.
    let (ok, stderr, target) = restore("flipped", &join_backup(&forged, &digest, &signature));
    assert!(!ok && stderr.contains("SHA-256 does not match"), "{stderr}");
    assert!(!target.exists(), "nothing was restored");

    // The checksum itself changed.
    let mut other_digest = digest.clone();
    other_digest[0] ^= 0x01;
    let (ok, stderr, _) = restore("checksum", &join_backup(&content, &other_digest, &signature));
    assert!(!ok && stderr.contains("SHA-256 does not match"), "{stderr}");

    // Signed by another node's key (FR's), over the right checksum.
    let fr = net.config("FR");
    let fr_signer =
        hanoi247::trust::signing::Signer::load(&fr.tls.cert, &fr.tls.key, &fr.tls.network_ca).unwrap();
    let digest_bytes: [u8; 32] = digest.clone().try_into().unwrap();
    let by_fr = hanoi247::trust::witness::sign_backup(&fr_signer, code("VN"), &digest_bytes).unwrap();
    let (ok, stderr, target) = restore("by-fr", &join_backup(&content, &digest, &by_fr));
    assert!(
        !ok && stderr.contains("signature does not verify") && stderr.contains("another key"),
        "{stderr}"
    );
    assert!(!target.exists(), "nothing was restored");

    // An old unsigned backup (format 1) is refused unless the operator accepts it.
    let mut unsigned = content.clone();
    unsigned[8..12].copy_from_slice(&1u32.to_be_bytes());
    let unsigned = [unsigned.clone(), sha256(&unsigned)].concat();
    let (ok, stderr, target) = restore("unsigned", &unsigned);
    assert!(!ok && stderr.contains("not signed") && stderr.contains("--accept-unsigned"), "{stderr}");
    assert!(!target.exists(), "nothing was restored");

    // The untouched file restores, checked with the node's certificate.
    let (ok, stderr, target) = restore("good", &good);
    assert!(ok, "{stderr}");
    assert!(target.exists());

    // The node still serves.
    let got = officer.get(hanoi247::proto::GetRequest { id: id.clone() }).await.unwrap();
    assert_eq!(got.into_inner().message.unwrap().envelope.unwrap().id, id);
    net.stop("VN").await;
    net.stop("FR").await;
}

/// Re-signs the network CA's revocation list with the given validity (hours from now).
fn sign_network_crl(net: &Network, from_hours: i64, until_hours: i64) {
    use hanoi247::trust::pki::CertificateAuthority;
    let config = net.config("VN");
    let ca_cert = std::fs::read_to_string(&config.tls.network_ca).unwrap();
    let ca_key = std::fs::read_to_string(net.dir().join("net/network-ca.key")).unwrap();
    let ca = CertificateAuthority::from_pem(&ca_cert, &ca_key).unwrap();
    let path = config.tls.peer_crl.unwrap();
    let mut list = ca.read_revocation_list(&std::fs::read_to_string(&path).unwrap()).unwrap();
    list.number += 1;
    let now = time::OffsetDateTime::now_utc();
    let pem = ca
        .sign_revocation_list_between(
            &list,
            now + time::Duration::hours(from_hours),
            now + time::Duration::hours(until_hours),
        )
        .unwrap();
    std::fs::write(&path, pem).unwrap();
}

async fn hello_from_fr(net: &Network) -> Result<(), tonic::Status> {
    net.peer_client("FR", "VN").hello(hanoi247::proto::HelloRequest::default()).await.map(|_| ())
}

/// `hanoi247_crl_stale` of VN, once its metrics listener answers.
async fn crl_stale_metric(net: &Network) -> Option<f64> {
    let port = net.config("VN").metrics.listen.port();
    let mut value = None;
    eventually("VN's metrics listener shows hanoi247_crl_stale", async || {
        value = tokio::task::spawn_blocking(move || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
            metric(port, "hanoi247_crl_stale{}")
        })
        .await
        .unwrap();
        value.is_some()
    })
    .await;
    value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_crl_pages_by_default_and_strict_refuses_the_handshake() {
    let net = Network::new(&["VN", "FR"]).await;
    // The network CA's list ran out an hour ago (its CA is late).
    sign_network_crl(&net, -48, -1);

    // Default policy: the node keeps serving peers, logs an ERROR and the metric pages.
    let vn = net.spawn("VN").await;
    hello_from_fr(&net).await.expect("default: a stale CRL keeps peers served");
    assert_eq!(crl_stale_metric(&net).await, Some(1.0));
    let log = net.log_of("VN");
    assert!(log.contains("ERROR") && log.contains("CRL is past its nextUpdate"), "{log}");
    assert!(vn.terminate().await.success());

    // strict: the peer's handshake is refused; the desk (its own, fresh CRL) still serves.
    net.edit_config(
        "VN",
        "peer_crl = \"../network-ca.crl\"",
        "peer_crl = \"../network-ca.crl\"\ncrl_stale = \"strict\"",
    );
    let vn = net.spawn("VN").await;
    hello_from_fr(&net).await.expect_err("strict: a stale CRL refuses the handshake");
    let fr = net.config("FR");
    let fr_tls = hanoi247::trust::tls::client_config(&fr.tls.network_ca, &fr.tls.cert, &fr.tls.key).unwrap();
    let alert = handshake_alert(fr_tls, net.config("VN").listen.peer.port()).await;
    // webpki refuses a certificate whose revocation status it cannot know (rustls says UnknownCA).
    assert!(alert.contains("UnknownCA"), "{alert}");
    assert_eq!(crl_stale_metric(&net).await, Some(1.0));
    let mut officer = net.desk("VN");
    inbox(&mut officer).await;

    // A fresh list, reloaded on SIGHUP: served again, and the page clears.
    sign_network_crl(&net, -1, 24 * 7);
    vn.hangup();
    let mut last = String::new();
    eventually("FR is served again after a fresh CRL", async || match hello_from_fr(&net).await {
        Ok(()) => true,
        Err(status) => {
            last = status.to_string();
            false
        }
    })
    .await;
    assert_eq!(crl_stale_metric(&net).await, Some(0.0), "{last}");
}

#[test]
fn the_metrics_listener_binds_loopback_by_default() {
    let config: hanoi247::config::MetricsConfig = toml::from_str("").unwrap();
    assert!(config.listen.ip().is_loopback(), "{}", config.listen);
    assert!(hanoi247::config::MetricsConfig::default().listen.ip().is_loopback());
}

/// The permission bits of `path`.
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// `deploy/compose-prepare.sh` keeps the keys private (0600) and puts only the peer, desk and
/// console listeners on the container's interfaces; `deploy/compose.yaml` publishes only the peer
/// port beyond the host (desk and console on the host's loopback, metrics not at all).
#[test]
fn the_compose_preparation_keeps_keys_private_and_publishes_only_the_peer_port() {
    if Command::new("openssl").arg("version").output().is_err() {
        eprintln!("SKIPPED: openssl not installed (compose-prepare.sh needs it)");
        return;
    }
    let bin = env!("CARGO_BIN_EXE_hanoi247");
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let dir = tempfile::tempdir().unwrap();
    let net = dir.path().join("net");
    let init = Command::new(bin)
        .args(["init", "--out"])
        .arg(&net)
        .args(["--nodes", "VN,FR", "--base-port", "7247"])
        .output()
        .unwrap();
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    let prepare = Command::new("bash")
        .arg(deploy.join("compose-prepare.sh"))
        .arg(&net)
        .env("HANOI247", bin)
        .output()
        .unwrap();
    assert!(prepare.status.success(), "{}", String::from_utf8_lossy(&prepare.stderr));

    let compose = std::fs::read_to_string(deploy.join("compose.yaml")).unwrap();
    let published: Vec<&str> = compose
        .lines()
        .map(str::trim)
        .filter_map(|line| line.strip_prefix("- \"").and_then(|l| l.strip_suffix('"')))
        .filter(|mapping| mapping.chars().all(|c| c.is_ascii_digit() || c == ':' || c == '.'))
        .collect();
    assert!(!published.is_empty(), "{compose}");
    for (cc, i) in [("vn", 0u16), ("fr", 1)] {
        let prepared = net.join("compose").join(cc);
        for key in ["node.key", "desk.key"] {
            assert_eq!(mode(&prepared.join(key)), 0o600, "{cc}/{key}");
        }
        let config = hanoi247::config::NodeConfig::load(&prepared.join("node.toml")).unwrap();
        let (peer, desk, metrics) = (7247 + 10 * i, 7248 + 10 * i, 7249 + 10 * i);
        assert!(config.listen.peer.ip().is_unspecified(), "{cc}: peers must reach {}", config.listen.peer);
        assert_eq!(config.metrics.listen.port(), metrics);
        assert!(config.metrics.listen.ip().is_loopback(), "{cc}: metrics on {}", config.metrics.listen);
        let console = config.console.listen;
        assert!(
            console.ip().is_unspecified() && console.port() == 7250 + 10 * i,
            "{cc}: console on {console}"
        );
        assert!(published.contains(&format!("127.0.0.1:{0}:{0}", console.port()).as_str()), "{published:?}");
        // Beyond the host: the peer port only. On the host's loopback: the desk.
        assert!(published.contains(&format!("{peer}:{peer}").as_str()), "{published:?}");
        assert!(published.contains(&format!("127.0.0.1:{desk}:{desk}").as_str()), "{published:?}");
        assert!(
            !published.iter().any(|p| p.ends_with(&format!(":{metrics}"))),
            "metrics published: {published:?}"
        );
    }
    for mapping in &published {
        let parts: Vec<&str> = mapping.split(':').collect();
        let is_peer = parts.len() == 2 && [7247, 7257, 7267].iter().any(|p| parts[0] == p.to_string());
        assert!(is_peer || mapping.starts_with("127.0.0.1:"), "{mapping} is published beyond the host");
    }
}
