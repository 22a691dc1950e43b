//! Issue 8's acceptance in a real browser: Debian's Chromium, driven by Playwright for Python
//! (`tests/browser/console_browser.py`), against two real nodes with the client certificates
//! (`.p12`) that `init` made. The script checks: no certificate and another CA's certificate
//! refused; a FLASH from VN in FR's open inbox within 2 s without a reload; acknowledged from
//! the message page and ACKNOWLEDGED at VN; the new-request form naming the missing field with
//! nothing stored; the auditor refused by the server; an agency seeing none of the others'
//! messages; a request sent from the form; the network page; no request to any other host;
//! the CSP header; keyboard only; a narrow window. And issue 17's: the answer form's typed
//! outcome (EXECUTED, preserved 90 days) shown on the message page, the preservations view with
//! its days left, the print view with the outcome, and "Close case" (the page then says CLOSED
//! and the case is off the preservation clock). It saves screenshots: under the target
//! directory, or into `docs/` when `HANOI247_UPDATE_SCREENSHOTS=1`.
//!
//! Needs `chromium` (`apt-get install chromium`; or `HANOI247_CHROMIUM=/path`) and PyPI for the
//! pinned Playwright (a virtualenv cached under the target directory). Without either the test
//! prints `SKIPPED: <reason>` and returns.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use hanoi247::domain::access::Role;

use crate::support::python::{Ran, Venv, cached_venv, run_with_deadline, skipped};
use crate::support::*;

/// The whole browser script.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(300);

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

fn chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("HANOI247_CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"].iter().map(PathBuf::from).find(|p| p.exists())
}

fn client(dir: &Path, name: &str) -> serde_json::Value {
    let password = std::fs::read_to_string(dir.join(format!("{name}.p12.password"))).unwrap();
    serde_json::json!({
        "p12": dir.join(format!("{name}.p12")),
        "password": password.trim_end(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_chromium() {
    let Some(chromium) = chromium() else {
        skipped("the console browser tests need chromium (apt-get install chromium, or HANOI247_CHROMIUM)");
        return;
    };
    let requirements = browser_dir().join("requirements.txt");
    let venv = tokio::task::spawn_blocking(move || cached_venv("browser-venv", &requirements));
    let python = match venv.await.unwrap() {
        Venv::Ready(python) => python,
        Venv::PypiUnreachable(reason) => {
            skipped(&format!("the console browser tests need Playwright from PyPI: {reason}"));
            return;
        }
        Venv::Unavailable(reason) => {
            skipped(&format!("the console browser tests need Python: {reason}"));
            return;
        }
    };
    let clients = [
        ("VN", "officer", Role::Officer),
        ("FR", "officer", Role::Officer),
        ("FR", "operator", Role::Operator),
        ("FR", "audit", Role::Auditor),
        ("FR", "police", Role::Agency),
    ];
    // DE is in the directory but never started: a peer that is down, with a queue.
    let mut net = Network::with_clients(&["VN", "FR", "DE"], &clients).await;
    net.start("VN").await;
    net.start("FR").await;
    let fr_dir = net.config_path("FR").parent().unwrap().to_owned();
    let vn_dir = net.config_path("VN").parent().unwrap().to_owned();
    let screenshots = match std::env::var_os("HANOI247_UPDATE_SCREENSHOTS") {
        Some(_) => Path::new(env!("CARGO_MANIFEST_DIR")).join("docs"),
        None => Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots"),
    };
    std::fs::create_dir_all(&screenshots).unwrap();
    let args = serde_json::json!({
        "chromium": chromium,
        "binary": env!("CARGO_BIN_EXE_hanoi247"),
        "url": format!("https://127.0.0.1:{}", net.config("FR").console.listen.port()),
        "officer": client(&fr_dir, "officer"),
        "operator": client(&fr_dir, "operator"),
        "auditor": client(&fr_dir, "audit"),
        "agency": client(&fr_dir, "police"),
        "foreign": client(&vn_dir, "officer"),
        "vn_client": net.client_config_path_of("VN", "officer"),
        "screenshots": screenshots,
    });
    let args_path = net.dir().join("browser-args.json");
    std::fs::write(&args_path, args.to_string()).unwrap();
    let log = net.dir().join("browser.log");
    let local_ca = fr_dir.join("local-ca.pem");
    let Ran { status, output } = tokio::task::spawn_blocking(move || {
        run_with_deadline(
            Command::new(python)
                .arg(browser_dir().join("console_browser.py"))
                .arg(&args_path)
                // Playwright's driver presents the client certificates and verifies the console's.
                .env("NODE_EXTRA_CA_CERTS", local_ca),
            &log,
            SCRIPT_DEADLINE,
        )
    })
    .await
    .unwrap();
    println!("{output}");
    assert!(status.success(), "the browser script failed ({status}):\n{output}");
    assert!(output.contains("all steps passed"), "{output}");
    net.stop("FR").await;
    net.stop("VN").await;
}
