//! Issue 20: the install list of deploy/RUNBOOK.md section 1 (the fenced block after the
//! `<!-- install-list` marker) is exactly what a node needs: those files, copied from an `init`
//! output into an empty directory, start a node that answers `/readyz`; the unit file's install
//! comment names the same files; no CA private key is among them.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::operator_view::http_get;
use crate::support::*;

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy").join(file)
}

/// The files of `install -m MODE ... FILES /etc/hanoi247/` lines, with their modes.
fn installed_files<'a>(lines: impl Iterator<Item = &'a str>) -> Vec<(String, u32)> {
    let mut files = Vec::new();
    for line in lines {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first() != Some(&"install") || words.last() != Some(&"/etc/hanoi247/") {
            continue;
        }
        let mut mode = 0o644;
        let mut rest = words[1..words.len() - 1].iter();
        while let Some(word) = rest.next() {
            match *word {
                "-m" => mode = u32::from_str_radix(rest.next().unwrap(), 8).unwrap(),
                "-o" | "-g" => {
                    rest.next();
                }
                file => files.push((file.to_owned(), mode)),
            }
        }
    }
    files
}

/// The RUNBOOK's install list: the fenced block after the marker.
pub(crate) fn runbook_install_list() -> Vec<(String, u32)> {
    let runbook = std::fs::read_to_string(deploy("RUNBOOK.md")).unwrap();
    let after = runbook.split_once("<!-- install-list").expect("the RUNBOOK marks its install list").1;
    let block = after.split_once("```sh\n").expect("a fenced block follows the marker").1;
    let block = block.split_once("```").unwrap().0;
    installed_files(block.lines())
}

#[test]
fn the_unit_file_installs_the_runbooks_list() {
    let unit = std::fs::read_to_string(deploy("hanoi247.service")).unwrap();
    let from_unit: BTreeSet<String> = installed_files(unit.lines().filter_map(|l| l.strip_prefix("#")))
        .into_iter()
        .map(|(f, _)| f)
        .collect();
    let from_runbook: BTreeSet<String> = runbook_install_list().into_iter().map(|(f, _)| f).collect();
    assert_eq!(from_unit, from_runbook);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_starts_from_exactly_the_runbooks_install_list() {
    let list = runbook_install_list();
    let names: Vec<&str> = list.iter().map(|(f, _)| f.as_str()).collect();
    for needed in ["node.toml", "directory.toml", "network-ca.crl", "local-ca.crl"] {
        assert!(names.contains(&needed), "{needed} is not in the install list {names:?}");
    }
    assert!(!names.iter().any(|n| n.contains("ca.key") || n.contains("secretariat")), "{names:?}");

    let net = Network::new(&["VN", "FR"]).await;
    let node_dir = net.config_path("VN").parent().unwrap().to_owned();
    let network_dir = node_dir.parent().unwrap().to_owned();
    let etc = tempfile::tempdir().unwrap();
    for (name, mode) in &list {
        let from = [node_dir.join(name), network_dir.join(name)].into_iter().find(|p| p.exists());
        let from = from.unwrap_or_else(|| panic!("init makes no {name}"));
        let to = etc.path().join(name);
        std::fs::copy(&from, &to).unwrap();
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(*mode)).unwrap();
    }
    // As node.example.toml has it: every file in the one directory; data_dir elsewhere.
    let state = tempfile::tempdir().unwrap();
    let config = etc.path().join("node.toml");
    let text = std::fs::read_to_string(&config).unwrap().replace("\"../", "\"");
    let text = text.replace("data_dir = \"data\"", &format!("data_dir = {:?}", state.path().join("data")));
    std::fs::write(&config, text).unwrap();
    let metrics = hanoi247::config::NodeConfig::load(&config).unwrap().metrics.listen.port();

    let stderr = etc.path().join("node.log");
    let node = spawn_until_ready(&config, &stderr, metrics).await;
    assert!(node.terminate().await.success());

    // And the list is not padded: without the CRL it names, the node does not start.
    std::fs::remove_file(etc.path().join("network-ca.crl")).unwrap();
    let mut refused = ChildNode {
        child: Command::new(env!("CARGO_BIN_EXE_hanoi247"))
            .args(["node", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap(),
    };
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = refused.child.try_wait().unwrap() {
            break status;
        }
        // A node that keeps running here started without the file (it is killed on drop).
        assert!(tokio::time::Instant::now() < deadline, "started without network-ca.crl");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let said = std::fs::read_to_string(&stderr).unwrap();
    assert!(!status.success() && said.contains("network-ca.crl"), "{status}: {said}");
}

/// `hanoi247 node --config config` as a child process (stderr into `log`), once its metrics
/// listener on `metrics` answers `/readyz` with 200; panics with the log if it exits or is not
/// ready within the deadline.
pub(crate) async fn spawn_until_ready(
    config: &std::path::Path,
    log: &std::path::Path,
    metrics: u16,
) -> ChildNode {
    let mut node = ChildNode {
        child: Command::new(env!("CARGO_BIN_EXE_hanoi247"))
            .args(["node", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap(),
    };
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(status) = node.child.try_wait().unwrap() {
            panic!("the node exited ({status}):\n{}", std::fs::read_to_string(log).unwrap_or_default());
        }
        let ready = tokio::task::spawn_blocking(move || {
            std::net::TcpStream::connect(("127.0.0.1", metrics)).is_ok()
                && http_get(metrics, "/readyz").0 == 200
        });
        if ready.await.unwrap() {
            return node;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not ready:\n{}",
            std::fs::read_to_string(log).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
