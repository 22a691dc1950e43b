//! Issue 15 (wake the duty officer): the metrics an operator pages on, served as the OpenMetrics
//! text they are, and health that tells the truth (the store cannot write, shutdown, systemd).

use std::io::{Read as _, Write as _};

use hanoi247::proto::{AcknowledgeRequest, MessageState, Precedence};

use crate::support::*;

/// One plain HTTP/1.0 GET on the metrics listener: (status, headers, body).
fn get(port: u16, path: &str) -> (u16, String, String) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (status, head.to_ascii_lowercase(), body.to_owned())
}

async fn get_async(port: u16, path: &str) -> (u16, String, String) {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || get(port, &path)).await.unwrap()
}

/// The value of the sample line `sample` (name and labels exactly as served; an unlabelled
/// sample may be served as `name{}`).
fn sample(body: &str, sample: &str) -> Option<f64> {
    body.lines().find_map(|line| {
        let rest = line.strip_prefix(sample)?;
        let rest = rest.strip_prefix("{}").unwrap_or(rest);
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

/// Checks the OpenMetrics rules Prometheus relies on to keep types: `# EOF` last, every sample
/// belongs to a family with a `# TYPE` line, counter families are named without `_total` and
/// their samples with it.
fn assert_valid_openmetrics(body: &str) {
    assert!(body.ends_with("# EOF\n"), "no # EOF at the end:\n{body}");
    assert_eq!(body.matches("# EOF").count(), 1, "{body}");
    let mut types = std::collections::HashMap::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (family, kind) = rest.split_once(' ').unwrap();
            assert!(
                !(kind == "counter" && family.ends_with("_total")),
                "counter family named with _total: {line}"
            );
            assert!(types.insert(family.to_owned(), kind.to_owned()).is_none(), "family typed twice: {line}");
        }
    }
    for line in body.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let name = line.split(['{', ' ']).next().unwrap();
        let family = types.keys().filter(|family| name.starts_with(family.as_str())).max_by_key(|f| f.len());
        let family = family.unwrap_or_else(|| panic!("sample without a # TYPE line: {line}"));
        if types[family] == "counter" {
            assert_eq!(name, format!("{family}_total"), "counter sample not named <family>_total: {line}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_openmetrics_with_the_figures_an_operator_pages_on() {
    let mut net = Network::new(&["VN", "FR"]).await;
    net.start("VN").await;
    net.start("FR").await;
    let port = net.config("FR").metrics.listen.port();
    let mut vn = net.desk("VN");
    let mut fr = net.desk("FR");

    // Before anything arrives: every precedence is there, at zero.
    let (status, head, body) = get_async(port, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        head.contains("content-type: application/openmetrics-text; version=1.0.0; charset=utf-8"),
        "{head}"
    );
    assert_valid_openmetrics(&body);
    for precedence in ["FLASH", "IMMEDIATE", "PRIORITY", "ROUTINE"] {
        let name = format!("hanoi247_unacknowledged_requests{{precedence=\"{precedence}\"}}");
        assert_eq!(sample(&body, &name), Some(0.0), "{name}\n{body}");
    }
    assert_eq!(sample(&body, "hanoi247_store_writable"), Some(1.0), "{body}");
    let version = format!("hanoi247_build_info{{version=\"{}\"}}", env!("CARGO_PKG_VERSION"));
    assert_eq!(sample(&body, &version), Some(1.0), "{body}");
    if cfg!(target_os = "linux") {
        let resident = sample(&body, "process_resident_memory_bytes").unwrap();
        assert!(resident > 1_000_000.0, "a node takes more than 1 MB: {resident}");
        let open = sample(&body, "process_open_fds").unwrap();
        let max = sample(&body, "process_max_fds").unwrap();
        assert!(open >= 3.0 && open < max, "open files {open} of {max}");
    }

    // A FLASH request from VN waits for FR's duty officer: counted, and its age grows.
    let id = submit(&mut vn, advice_request("FR", Precedence::Flash, "wake up")).await;
    wait_state(&mut fr, &id, MessageState::Received).await;
    let (_, _, body) = get_async(port, "/metrics").await;
    assert_valid_openmetrics(&body);
    assert_eq!(sample(&body, "hanoi247_unacknowledged_requests{precedence=\"FLASH\"}"), Some(1.0), "{body}");
    assert_eq!(sample(&body, "hanoi247_unacknowledged_requests{precedence=\"ROUTINE\"}"), Some(0.0));
    let age = sample(&body, "hanoi247_unacknowledged_oldest_age_seconds{precedence=\"FLASH\"}").unwrap();
    assert!(age > 0.0 && age < DEADLINE.as_secs_f64() * 2.0, "age {age}");
    assert!(body.contains("# TYPE hanoi247_envelopes_received counter\n"), "{body}");
    assert!(
        sample(&body, "hanoi247_envelopes_received_total{peer=\"VN\",kind=\"REQUEST\"}").is_some(),
        "{body}"
    );
    // The sender does not count it: it waits for a person at FR, not at VN.
    let (_, _, at_vn) = get_async(net.config("VN").metrics.listen.port(), "/metrics").await;
    assert_eq!(sample(&at_vn, "hanoi247_unacknowledged_requests{precedence=\"FLASH\"}"), Some(0.0));

    fr.acknowledge(AcknowledgeRequest { id: id.clone(), note: "on it".into() }).await.unwrap();
    let (_, _, body) = get_async(port, "/metrics").await;
    assert_eq!(sample(&body, "hanoi247_unacknowledged_requests{precedence=\"FLASH\"}"), Some(0.0), "{body}");
    assert_eq!(sample(&body, "hanoi247_unacknowledged_oldest_age_seconds{precedence=\"FLASH\"}"), Some(0.0));
    net.stop("FR").await;
    net.stop("VN").await;
}
