//! Issue 19: `hanoi247 bench --peers N` on a tiny network (3 peers, one-second CPU window): the
//! same code path as the 193-member figures of docs/benchmarks.md, bounded in time, and its bad
//! arguments refused by name.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The whole run: init of 4 members, 5 node processes started and stopped, a 1 s window.
const RUN_DEADLINE: Duration = Duration::from_secs(120);

/// Runs the binary with `args`, killing it at the deadline: (success, stdout, stderr).
fn hanoi247(args: &[&str]) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_hanoi247"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > RUN_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "hanoi247 {args:?} did not finish within {RUN_DEADLINE:?}:\n{}",
                std::fs::read_to_string(&err).unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    (status.success(), std::fs::read_to_string(out).unwrap(), std::fs::read_to_string(err).unwrap())
}

#[test]
fn bench_peers_measures_a_small_network() {
    let (ok, out, err) = hanoi247(&["--json", "bench", "--peers", "3", "--settle", "0s", "--window", "1s"]);
    assert!(ok, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(report["members"], 4);
    assert_eq!(report["broadcaster"], "AA");
    assert_eq!(report["broadcast"]["messages"], 3);
    assert_eq!(report["broadcast"]["latency"]["samples"], 3);
    let number = |path: &[&str]| {
        let value = path.iter().fold(&report, |v, key| &v[*key]);
        value.as_f64().unwrap_or_else(|| panic!("{path:?} is not a number in {report}"))
    };
    // The broadcast completes after its slowest message, which took at least as long as the median.
    assert!(number(&["broadcast", "complete_ms"]) >= number(&["broadcast", "latency", "p50_ms"]));
    assert!(number(&["broadcast", "complete_ms"]) > 0.0);
    assert!(number(&["startup_peers_down_s"]) > 0.0);
    assert!(number(&["peers_down", "cpu_percent_of_core"]) >= 0.0);
    assert!(number(&["peers_down", "window_s"]) >= 1.0);
    // Three peers connected: a listener, the store's files and a connection each way per peer.
    assert!(number(&["connected", "open_files"]) >= 3.0 * 2.0);
    assert!(number(&["connected", "rss_mib"]) > 1.0);
    assert!(number(&["connected", "peak_rss_mib"]) >= number(&["connected", "rss_mib"]));
    assert_eq!(report["machine"]["load_average_before"].as_str().unwrap().split(' ').count(), 3);
    assert!(report["kept_dir"].is_null());
}

#[test]
fn bench_peers_refuses_bad_arguments_by_name() {
    let (ok, _, err) = hanoi247(&["bench", "--peers", "0"]);
    assert!(!ok && err.contains("--peers"), "{err}");
    let (ok, _, err) = hanoi247(&["bench", "--peers", "676"]);
    assert!(!ok && err.contains("--peers") && err.contains("675"), "{err}");
    // The CPU window belongs to --peers.
    let (ok, _, err) = hanoi247(&["bench", "--window", "5s"]);
    assert!(!ok && err.contains("--peers"), "{err}");
    let (ok, _, err) = hanoi247(&["bench", "--peers", "3", "--settle", "soon"]);
    assert!(!ok && err.contains("--settle"), "{err}");
}
