//! Issue 14, bullets 8 and 9: a tamper-evident tail and the trust edges an operator relies on.
//! The audit head is signed and witnessed by peers in `Hello`, so a log cut short on disk (its
//! head key rewritten to match) is named by `audit verify` with the head a peer witnessed;
//! backups carry a signature `restore` checks; a CRL past its nextUpdate follows the
//! `[tls] crl_stale` policy; metrics stay on loopback; the compose preparation keeps keys private.

use std::process::Command;

use hanoi247::domain::access::Role;
use hanoi247::proto::AuditRecord;
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
        let last = AuditRecord::decode(last.as_ref()).unwrap();
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
}
