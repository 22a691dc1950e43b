//! Issue 15: the alert rules, checked against the runbook and by promtool, and a real Prometheus
//! (Debian's `prometheus` package) scraping a real node: it keeps every family's type, and the
//! node-down and store-not-writable alerts fire and, through a real Alertmanager (Debian's
//! `prometheus-alertmanager`), reach a pager webhook. Without the binaries: SKIPPED on stderr.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hanoi247::proto::{MessageState, Precedence};

use crate::support::*;

fn skipped(why: &str) {
    let _ = writeln!(std::io::stderr(), "SKIPPED: {why}");
}

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy").join(file)
}

/// Whether `program --version` runs.
fn installed(program: &str) -> bool {
    Command::new(program).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

/// Every alert has a `runbook_url` whose anchor is a heading of deploy/RUNBOOK.md.
#[test]
fn every_alert_links_a_runbook_section_that_exists() {
    let rules = std::fs::read_to_string(deploy("prometheus/alerts.yml")).unwrap();
    let runbook = std::fs::read_to_string(deploy("RUNBOOK.md")).unwrap();
    // GitHub's anchors: headings lower-cased, spaces to dashes, other punctuation dropped.
    let anchors: Vec<String> = runbook
        .lines()
        .filter_map(|line| line.strip_prefix('#'))
        .map(|heading| {
            heading
                .trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter_map(|c| match c {
                    ' ' => Some('-'),
                    c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                    _ => None,
                })
                .collect()
        })
        .collect();
    let mut alerts = 0;
    for block in rules.split("- alert: ").skip(1) {
        alerts += 1;
        let name = block.lines().next().unwrap().trim();
        let url = block
            .lines()
            .find_map(|line| line.trim().strip_prefix("runbook_url: "))
            .unwrap_or_else(|| panic!("{name} has no runbook_url"));
        let url = url.trim_matches('"');
        assert!(url.starts_with("file:///usr/share/doc/hanoi247/RUNBOOK.md#"), "{name}: {url}");
        let anchor = url.split_once('#').unwrap().1;
        assert!(anchors.iter().any(|a| a == anchor), "{name}: no heading in RUNBOOK.md for #{anchor}");
    }
    assert!(alerts >= 15, "only {alerts} alerts found");
    for required in [
        "up{job=\"hanoi247\"} == 0",
        "absent(up{job=\"hanoi247\"})",
        "hanoi247_store_writable == 0",
        "hanoi247_unacknowledged_oldest_age_seconds{precedence=\"FLASH\"}",
        "hanoi247_notifications_failed_total",
        "hanoi247_peer_up == 0",
        "hanoi247_certificate_expiry_timestamp_seconds",
        "hanoi247_crl_next_update_timestamp_seconds",
    ] {
        assert!(rules.contains(required), "no rule on {required}");
    }
}

/// `promtool check rules` and `promtool test rules`, as .ci/run runs them.
#[test]
fn promtool_checks_and_unit_tests_the_alert_rules() {
    if !installed("promtool") {
        skipped("promtool not installed (Debian package prometheus; .ci/run installs it as root)");
        return;
    }
    for (what, file) in [("check", "prometheus/alerts.yml"), ("test", "prometheus/alerts.test.yml")] {
        let output = Command::new("promtool").args([what, "rules"]).arg(deploy(file)).output().unwrap();
        let text =
            format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert!(output.status.success(), "promtool {what} rules {file}:\n{text}");
        assert!(text.contains("SUCCESS"), "{text}");
    }
    let output = Command::new("promtool")
        .args(["check", "config"])
        .arg(deploy("prometheus/prometheus.example.yml"))
        .output();
    let output = output.unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stdout));
    if !installed("amtool") {
        skipped(
            "amtool not installed (Debian package prometheus-alertmanager): Alertmanager example not checked",
        );
        return;
    }
    let example = deploy("prometheus/alertmanager.example.yml");
    let output = Command::new("amtool").arg("check-config").arg(example).output().unwrap();
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// One HTTP/1.0 GET to 127.0.0.1:`port`: (status, body). `None` when nothing answers.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(DEADLINE)).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok())?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Some((status, body))
}

/// The JSON `data` of a Prometheus API answer.
async fn api(port: u16, path: &str) -> serde_json::Value {
    let path = path.to_owned();
    let (status, body) = tokio::task::spawn_blocking(move || http_get(port, &path))
        .await
        .unwrap()
        .expect("Prometheus answers");
    assert_eq!(status, 200, "{body}");
    let mut answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    answer["data"].take()
}

/// The alert names in state `firing`.
async fn firing(port: u16) -> Vec<String> {
    let data = api(port, "/api/v1/alerts").await;
    let alerts = data["alerts"].as_array().cloned().unwrap_or_default();
    alerts
        .iter()
        .filter(|a| a["state"] == "firing")
        .filter_map(|a| a["labels"]["alertname"].as_str().map(str::to_owned))
        .collect()
}

/// A Prometheus server; killed when dropped.
struct Prometheus {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Starts Prometheus in `dir` scraping `target` every second, with the project's alert rules
    /// (their `for:` shortened to 2 s, so that the test takes seconds, not minutes).
    async fn start(dir: &Path, target: std::net::SocketAddr, alertmanager: Option<u16>) -> Self {
        let rules = std::fs::read_to_string(deploy("prometheus/alerts.yml")).unwrap();
        let shortened: String = rules
            .lines()
            .map(|line| match line.trim_start().strip_prefix("for: ") {
                Some(_) => format!("{}for: 2s\n", &line[..line.len() - line.trim_start().len()]),
                None => format!("{line}\n"),
            })
            .collect();
        std::fs::write(dir.join("alerts.yml"), shortened).unwrap();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files: [alerts.yml]\n\
             scrape_configs:\n  - job_name: hanoi247\n    static_configs:\n      - targets: [\"{target}\"]\n"
        );
        let config = match alertmanager {
            Some(port) => format!(
                "{config}alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: [\"127.0.0.1:{port}\"]\n"
            ),
            None => config,
        };
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let port = free_port().await;
        let log = dir.join("prometheus.log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut prometheus = Self { child, port, log };
        prometheus.until_ready().await;
        prometheus
    }

    /// Starts Alertmanager in `dir`, sending every alert at once to a webhook on `webhook_port`
    /// (the way a pager gateway is wired; deploy/prometheus/alertmanager.example.yml).
    async fn alertmanager(binary: &str, dir: &Path, webhook_port: u16) -> Self {
        let config = format!(
            "route:\n  receiver: pager\n  group_by: [alertname]\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\n\
             receivers:\n  - name: pager\n    webhook_configs:\n      - url: http://127.0.0.1:{webhook_port}/page\n        send_resolved: true\n"
        );
        std::fs::write(dir.join("alertmanager.yml"), config).unwrap();
        let port = free_port().await;
        let log = dir.join("alertmanager.log");
        let child = Command::new(binary)
            .arg(format!("--config.file={}", dir.join("alertmanager.yml").display()))
            .arg(format!("--storage.path={}", dir.join("alertmanager").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut alertmanager = Self { child, port, log };
        alertmanager.until_ready().await;
        alertmanager
    }

    async fn until_ready(&mut self) {
        let port = self.port;
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let ready = tokio::task::spawn_blocking(move || http_get(port, "/-/ready")).await.unwrap();
            if ready.is_some_and(|(status, _)| status == 200) {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("exited with {status}:\n{}", self.log());
            }
            assert!(tokio::time::Instant::now() < deadline, "not ready:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until alert `name` is firing.
    async fn until_firing(&self, name: &str) {
        // Scrape, evaluation and `for:` each take their second or two; Prometheus may be slow to
        // start on a busy machine.
        let deadline = tokio::time::Instant::now() + DEADLINE * 2;
        loop {
            let now = firing(self.port).await;
            if now.iter().any(|n| n == name) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} not firing; firing: {now:?}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A plain-HTTP webhook receiver (a pager gateway's stand-in): the bodies of the POSTs it got.
struct Webhook {
    port: u16,
    bodies: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Webhook {
    fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = std::sync::Arc::clone(&bodies);
        // Ends with the test process; one connection at a time is all Alertmanager needs here.
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                if let Some(body) = read_post(&mut stream) {
                    kept.lock().unwrap().push(body);
                }
                let _ =
                    stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            }
        });
        Self { port, bodies }
    }

    fn received(&self) -> String {
        self.bodies.lock().unwrap().join("\n")
    }
}

/// The body of one HTTP request (by its Content-Length).
fn read_post(stream: &mut std::net::TcpStream) -> Option<String> {
    stream.set_read_timeout(Some(DEADLINE)).ok()?;
    let mut bytes = Vec::new();
    let mut buffer = [0u8; 8192];
    loop {
        let n = stream.read(&mut buffer).ok()?;
        if n == 0 {
            return None;
        }
        bytes.extend_from_slice(&buffer[..n]);
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let Some((head, body)) = text.split_once("\r\n\r\n") else { continue };
        let length = head
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
        if body.len() >= length {
            return Some(body.to_owned());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_keeps_every_type_and_fires_store_and_node_down_alerts() {
    if !installed("prometheus") {
        skipped("prometheus not installed (Debian package prometheus; .ci/run installs it as root)");
        return;
    }
    let mut net = Network::new(&["VN", "FR"]).await;
    // VN's files may not grow past 2 MiB: a disk that fills up (see storage_failure.rs).
    let vn_process = net.spawn_with_file_limit("VN", 2048).await;
    net.start("FR").await;
    // Something received, so that every kind of family has samples (counters, histograms).
    let mut fr = net.desk("FR");
    let mut vn = net.desk("VN");
    let id = submit(&mut fr, advice_request("VN", Precedence::Flash, "scraped")).await;
    wait_state(&mut vn, &id, MessageState::Received).await;

    let prometheus_dir = tempfile::tempdir().unwrap();
    // With Alertmanager installed, the alerts go on to a pager webhook as well.
    let webhook = Webhook::start();
    // Debian names the binary prometheus-alertmanager.
    let alertmanager_binary = ["prometheus-alertmanager", "alertmanager"].into_iter().find(|b| installed(b));
    let alertmanager = if let Some(binary) = alertmanager_binary {
        Some(Prometheus::alertmanager(binary, prometheus_dir.path(), webhook.port).await)
    } else {
        skipped("alertmanager not installed (Debian package prometheus-alertmanager): alerts not sent on");
        None
    };
    let prometheus = Prometheus::start(
        prometheus_dir.path(),
        net.config("VN").metrics.listen,
        alertmanager.as_ref().map(|a| a.port),
    )
    .await;
    let port = prometheus.port;

    // The types Prometheus read from the scrapes: none lost.
    let want = [
        ("hanoi247_envelopes_received", "counter"),
        ("hanoi247_store_flushes", "counter"),
        ("process_resident_memory_bytes", "gauge"),
        ("hanoi247_unacknowledged_requests", "gauge"),
        ("hanoi247_store_writable", "gauge"),
        ("hanoi247_build_info", "gauge"),
    ];
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let metadata = api(port, "/api/v1/metadata").await;
        let type_of = |name: &str| metadata[name][0]["type"].as_str().map(str::to_owned);
        let got: Vec<_> = want.iter().map(|(name, _)| (*name, type_of(name))).collect();
        if got.iter().zip(want).all(|((_, got), (_, want))| got.as_deref() == Some(want)) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "types from Prometheus: {got:?}\n{metadata}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // And the counter's samples are queryable under the names the rules use.
    let query = api(port, "/api/v1/query?query=hanoi247_envelopes_received_total").await;
    assert_eq!(query["result"].as_array().map(Vec::len), Some(1), "{query}");
    // Before the first scrape `absent(up)` may have fired; once scraped, a healthy node is quiet.
    eventually("nothing fires for a healthy node", async || firing(port).await.is_empty()).await;

    // The disk fills up: the store cannot write, and the alert fires.
    for n in 0.. {
        assert!(n < 400, "the disk never filled up");
        let mut request = advice_request("FR", Precedence::Routine, &format!("filler {n}"));
        request.body = "x".repeat(16 * 1024);
        if vn.submit(request).await.is_err() {
            break;
        }
    }
    prometheus.until_firing("Hanoi247StoreNotWritable").await;
    // Through Alertmanager to the pager, with its runbook link.
    paged(
        &webhook,
        alertmanager.as_ref(),
        &["Hanoi247StoreNotWritable", "RUNBOOK.md#hanoi247storenotwritable"],
    )
    .await;

    // The node dies: the node-down alert fires, and pages.
    vn_process.kill9();
    prometheus.until_firing("Hanoi247NodeDown").await;
    paged(&webhook, alertmanager.as_ref(), &["Hanoi247NodeDown", "RUNBOOK.md#hanoi247nodedown"]).await;
    net.stop("FR").await;
}

/// Waits until the pager webhook got every one of `wanted` (when Alertmanager runs).
async fn paged(webhook: &Webhook, alertmanager: Option<&Prometheus>, wanted: &[&str]) {
    let Some(alertmanager) = alertmanager else { return };
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let received = webhook.received();
        if wanted.iter().all(|want| received.contains(want)) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the pager webhook got:\n{received}\n{}",
            alertmanager.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
