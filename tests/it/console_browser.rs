//! Issue 8's acceptance in a real browser: Debian's Chromium, driven by Playwright for Python
//! (`tests/browser/console_browser.py`), against two real nodes with the client certificates
//! (`.p12`) that `init` made. The script checks: no certificate and another CA's certificate
//! refused; a FLASH from VN in FR's open inbox within 2 s without a reload; acknowledged from
//! the message page and ACKNOWLEDGED at VN; the new-request form naming the missing field with
//! nothing stored; the auditor refused by the server; an agency seeing none of the others'
//! messages; a request sent from the form; the network page; no request to any other host;
//! the CSP header; keyboard only; a narrow window. It saves screenshots: under the
//! target directory, or into `docs/` when `HANOI247_UPDATE_SCREENSHOTS=1`.
//!
//! Needs `chromium` (`apt-get install chromium`; or `HANOI247_CHROMIUM=/path`) and PyPI for the
//! pinned Playwright (a virtualenv cached under the target directory). Without either the test
//! prints `SKIPPED: <reason>` and returns.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use hanoi247::access::Role;

use crate::support::*;

/// Installing Playwright (about 40 MB) on a fresh machine.
const INSTALL_DEADLINE: Duration = Duration::from_secs(600);
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

/// Runs `command` with its output into `log`, killed at the deadline; the status and the output.
fn run(command: &mut Command, log: &Path, within: Duration) -> (ExitStatus, String) {
    let file = File::create(log).unwrap();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} did not finish within {within:?}:\n{}", read(log));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status, read(log))
}

fn read(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
}

/// The cached virtualenv with Playwright, rebuilt when `requirements.txt` changes; `Err` says
/// why PyPI could not be reached.
fn playwright_venv() -> Result<PathBuf, String> {
    let requirements_path = browser_dir().join("requirements.txt");
    let requirements = std::fs::read_to_string(&requirements_path).unwrap();
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser-venv");
    let marker = venv.join("hanoi247-requirements.txt");
    let python = |dir: &Path| dir.join("bin/python");
    if std::fs::read_to_string(&marker).is_ok_and(|m| m == requirements) && python(&venv).exists() {
        return Ok(python(&venv));
    }
    let building = venv.with_file_name(format!("browser-venv.building-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&building);
    std::fs::create_dir_all(building.parent().unwrap()).unwrap();
    let log = building.with_extension("log");
    let (status, output) =
        run(Command::new("python3").args(["-m", "venv"]).arg(&building), &log, Duration::from_secs(120));
    assert!(status.success(), "python3 -m venv failed ({status}):\n{output}");
    let (status, output) = run(
        Command::new(python(&building))
            .args(["-m", "pip", "install", "--disable-pip-version-check", "--no-input"])
            .args(["--retries", "2", "--timeout", "30", "-r"])
            .arg(&requirements_path),
        &log,
        INSTALL_DEADLINE,
    );
    if !status.success() {
        let _ = std::fs::remove_dir_all(&building);
        let unreachable =
            ["NewConnectionError", "Temporary failure in name resolution", "Network is unreachable"];
        if let Some(line) = output.lines().find(|l| unreachable.iter().any(|m| l.contains(m))) {
            return Err(format!("PyPI unreachable: {}", line.trim()));
        }
        panic!("pip install -r {} failed ({status}):\n{output}", requirements_path.display());
    }
    std::fs::write(building.join("hanoi247-requirements.txt"), &requirements).unwrap();
    let _ = std::fs::remove_dir_all(&venv);
    std::fs::rename(&building, &venv).unwrap();
    let _ = std::fs::remove_file(&log);
    Ok(python(&venv))
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
        println!(
            "SKIPPED: the console browser tests need chromium (apt-get install chromium, or HANOI247_CHROMIUM)"
        );
        return;
    };
    let python = match tokio::task::spawn_blocking(playwright_venv).await.unwrap() {
        Ok(python) => python,
        Err(reason) => {
            println!("SKIPPED: the console browser tests need Playwright from PyPI: {reason}");
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
    let (status, output) = tokio::task::spawn_blocking(move || {
        run(
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
