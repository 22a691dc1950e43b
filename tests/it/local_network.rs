//! `deploy/`: the example production config loads with the real schema and documents every key
//! of it; `deploy/local-network.sh` runs a three-node network from `init`'s output as separate
//! processes of the real binary, says "ready" only when they serve, and stops them cleanly on
//! SIGTERM.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hanoi247::cli::desk_client;
use hanoi247::config::{ClientConfig, NodeConfig};
use hanoi247::proto::MessageState;
use tokio::sync::mpsc;

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_hanoi247");

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy").join(file)
}

/// Every key path of a TOML value: `listen.peer`, `directory[].code`, ...
fn key_paths(value: &toml::Value, prefix: &str, out: &mut BTreeSet<String>) {
    match value {
        toml::Value::Table(table) => {
            for (key, value) in table {
                let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                out.insert(path.clone());
                key_paths(value, &path, out);
            }
        }
        toml::Value::Array(items) => {
            for item in items.iter().filter(|item| item.is_table()) {
                key_paths(item, &format!("{prefix}[]"), out);
            }
        }
        _ => {}
    }
}

/// Key paths whose first `key = value` line is not directly under a comment line.
fn uncommented_keys(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let mut section = String::new();
    let mut seen = BTreeSet::new();
    let mut missing = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if let Some(header) = line.strip_prefix("[[").and_then(|l| l.strip_suffix("]]")) {
            section = format!("{header}[].");
            continue;
        }
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = format!("{header}.");
            continue;
        }
        let Some((key, _)) = line.split_once('=').filter(|_| !line.starts_with('#')) else { continue };
        let path = format!("{section}{}", key.trim());
        if !seen.insert(path.clone()) {
            continue;
        }
        if !lines[..i].last().is_some_and(|above| above.starts_with('#')) {
            missing.push(path);
        }
    }
    missing
}

#[test]
fn example_node_config_loads_and_documents_every_key() {
    let path = deploy("node.example.toml");
    // `load` checks the schema (unknown keys are errors) and the values; it does not read the
    // certificate files, which exist only on a real node.
    let config = NodeConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.code, code("FR"));
    assert_eq!(config.network, "hanoi247");
    assert_eq!(config.data_dir, Path::new("/var/lib/hanoi247"));
    assert_eq!(config.listen.peer, "0.0.0.0:7247".parse::<SocketAddr>().unwrap());
    assert_eq!(config.listen.desk, "127.0.0.1:7248".parse::<SocketAddr>().unwrap());
    assert_eq!(config.metrics.listen, "127.0.0.1:9247".parse::<SocketAddr>().unwrap());
    assert_eq!(config.tls.cert, Path::new("/etc/hanoi247/node.pem"));
    assert_eq!(config.delivery.retry_max, Duration::from_secs(60));
    assert_eq!(config.deadlines.flash, Duration::from_secs(15 * 60));
    let roles: Vec<(&str, &str)> = config.clients.iter().map(|c| (c.name.as_str(), c.role.name())).collect();
    assert_eq!(roles, [("duty-officer", "officer"), ("operations", "operator"), ("police-a05", "agency")]);
    assert_eq!(config.directory.file, Path::new("/etc/hanoi247/directory.toml"));

    // Every key the schema has (a loaded config serialises all of them, defaults included) is
    // written out in the example, and the example has no other (deny_unknown_fields above).
    let text = std::fs::read_to_string(&path).unwrap();
    let mut schema = BTreeSet::new();
    key_paths(&toml::Value::try_from(&config).unwrap(), "", &mut schema);
    let mut example = BTreeSet::new();
    key_paths(&toml::from_str::<toml::Value>(&text).unwrap(), "", &mut example);
    let not_shown: Vec<_> = schema.difference(&example).collect();
    assert!(not_shown.is_empty(), "keys of NodeConfig missing from node.example.toml: {not_shown:?}");
    assert_eq!(schema, example);

    let missing = uncommented_keys(&text);
    assert!(missing.is_empty(), "keys without a comment in node.example.toml: {missing:?}");
}

#[test]
fn uncommented_keys_are_found() {
    let text = "# the code\ncode = \"FR\"\n\n[listen]\npeer = \"x\"\n# desk\ndesk = \"y\"\n\
        [[directory]]\n# code\ncode = \"VN\"\nendpoint = \"a:1\"\n[[directory]]\ncode = \"DE\"\n";
    assert_eq!(uncommented_keys(text), ["listen.peer", "directory[].endpoint"]);
}

/// A base port P such that P+10i+{0,1,2} for three nodes are free on 127.0.0.1 right now. Below
/// the kernel's ephemeral range, so ports the OS hands to other tests do not collide.
fn free_base_port() -> u16 {
    let start = 20_000 + (std::process::id() % 300) as u16 * 30;
    (0..300u16)
        .map(|step| 20_000 + (start - 20_000 + step * 30) % 9_000)
        .find(|&base| {
            let listeners: Vec<_> = (0..3u16)
                // Peer, desk, metrics and console.
                .flat_map(|i| (0..4u16).map(move |offset| base + 10 * i + offset))
                .map(|port| std::net::TcpListener::bind(("127.0.0.1", port)))
                .collect();
            listeners.iter().all(Result::is_ok)
        })
        .expect("no free base port between 20000 and 29000")
}

/// The script, stopped (and its nodes with it) if the test fails before it does so itself.
struct Script {
    child: Child,
    node_pids: Vec<u32>,
}

impl Drop for Script {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
            let deadline = std::time::Instant::now() + DEADLINE;
            while self.child.try_wait().ok().flatten().is_none() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        for pid in self.node_pids.iter().filter(|pid| is_node_process(**pid)) {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        }
    }
}

/// Whether `pid` is (still) a `hanoi247 node` process.
fn is_node_process(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
        let cmdline = String::from_utf8_lossy(&cmdline);
        cmdline.contains("hanoi247") && cmdline.contains("node")
    })
}

/// Lines of stdout until `want` (returned with everything before it), within the deadline.
async fn read_until(lines: &mut mpsc::UnboundedReceiver<String>, want: &str, stderr: &Path) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, lines.recv()).await {
            Ok(Some(line)) if line == want => return seen,
            Ok(Some(line)) => seen.push(line),
            Ok(None) => panic!(
                "local-network.sh closed stdout before '{want}':\n{}\nstderr:\n{}",
                seen.join("\n"),
                std::fs::read_to_string(stderr).unwrap_or_default()
            ),
            Err(_) => panic!("no '{want}' from local-network.sh within {DEADLINE:?}:\n{}", seen.join("\n")),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_network_script_serves_and_stops_cleanly_on_sigterm() {
    let started = std::time::Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let net = dir.path().join("net");
    let base = free_base_port();
    let init = Command::new(BIN)
        .args(["init", "--out"])
        .arg(&net)
        .args(["--nodes", "VN,FR,DE", "--base-port", &base.to_string()])
        .output()
        .unwrap();
    assert!(init.status.success(), "init failed: {}", String::from_utf8_lossy(&init.stderr));

    let stderr = dir.path().join("script.stderr");
    let child = Command::new("bash")
        .arg(deploy("local-network.sh"))
        .arg(&net)
        .env("HANOI247_BIN", BIN)
        .env("HANOI247_READY_TIMEOUT", "30")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let mut script = Script { child, node_pids: Vec::new() };
    let (sender, mut lines) = mpsc::unbounded_channel();
    let stdout = script.child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = sender.send(line);
        }
    });

    let before_ready = read_until(&mut lines, "ready", &stderr).await;
    let mut started_nodes = Vec::new();
    for line in &before_ready {
        // "VN pid 1234 desk 127.0.0.1:20001 log .../vn/node.log"
        let words: Vec<&str> = line.split_whitespace().collect();
        if let [node, "pid", pid, "desk", desk, ..] = words[..] {
            let pid: u32 = pid.parse().unwrap();
            assert!(is_node_process(pid), "{node}'s pid {pid} is not a hanoi247 node");
            script.node_pids.push(pid);
            started_nodes.push((node.to_owned(), desk.to_owned()));
        }
    }
    started_nodes.sort();
    let expected: Vec<(String, String)> = [("DE", 2), ("FR", 1), ("VN", 0)]
        .iter()
        .map(|(node, i)| (node.to_string(), format!("127.0.0.1:{}", base + 10 * i + 1)))
        .collect();
    assert_eq!(started_nodes, expected, "{before_ready:?}");
    eprintln!("local network ready in {:?}", started.elapsed());

    // The network works: a request from VN reaches FR's inbox.
    let desk = |node: &str| {
        let config = ClientConfig::load(&net.join(node).join("officer.client.toml")).unwrap();
        desk_client::connect(&config).unwrap()
    };
    let (mut vn, mut fr) = (desk("vn"), desk("fr"));
    let id = submit(&mut vn, preservation_request("FR")).await;
    let received = wait_state(&mut fr, &id, MessageState::Received).await;
    assert_eq!(received.envelope.unwrap().origin, "VN");
    wait_state(&mut vn, &id, MessageState::Delivered).await;

    // SIGTERM to the script: it stops every node with SIGTERM, waits for them, exits 0.
    let kill = Command::new("kill").args(["-TERM", &script.child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = script.child.try_wait().unwrap() {
            break status;
        }
        assert!(tokio::time::Instant::now() < deadline, "local-network.sh did not stop within {DEADLINE:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut after = Vec::new();
    while let Ok(Some(line)) = tokio::time::timeout_at(deadline, lines.recv()).await {
        after.push(line);
    }
    let stderr_text = std::fs::read_to_string(&stderr).unwrap();
    assert!(status.success(), "local-network.sh exited {status}:\n{after:?}\nstderr:\n{stderr_text}");
    for node in ["VN", "FR", "DE"] {
        assert!(after.contains(&format!("{node} stopped")), "{node} not reported stopped: {after:?}");
        let log = std::fs::read_to_string(net.join(node.to_lowercase()).join("node.log")).unwrap();
        assert!(log.contains("node stopped"), "{node} did not stop gracefully:\n{log}");
    }
    for pid in &script.node_pids {
        assert!(!is_node_process(*pid), "node process {pid} is still there after the script exited");
    }
    eprintln!("local network test done in {:?}", started.elapsed());
}

/// Says why a test did nothing, straight to stderr (past the harness's capture) so every run shows it.
fn skipped(why: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "SKIPPED: {why}");
}

/// `systemd-analyze verify` accepts the unit without a word, and `systemd-analyze security` rates
/// its hardening OK (with `ExecStart` pointed at the binary under test,
/// since verify checks that the command exists). Skipped, saying so, where systemd is not
/// installed.
#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        skipped("systemd-analyze not installed");
        return;
    }
    let unit = std::fs::read_to_string(deploy("hanoi247.service")).unwrap();
    for required in [
        "User=hanoi247",
        "StateDirectory=hanoi247",
        "ConfigurationDirectory=hanoi247",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=\n",
        "RestrictAddressFamilies=",
        "SystemCallFilter=@system-service",
        "Restart=on-failure",
        "KillSignal=SIGTERM",
        "TimeoutStopSec=",
    ] {
        assert!(unit.contains(required), "hanoi247.service lacks {required:?}");
    }
    assert!(unit.contains("ExecStart=/usr/local/bin/hanoi247 node --config /etc/hanoi247/node.toml"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hanoi247.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/hanoi247", BIN)).unwrap();
    let verify = Command::new("systemd-analyze").args(["verify", "--man=no"]).arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success(), "systemd-analyze verify failed:\n{stderr}");
    assert!(stderr.trim().is_empty(), "systemd-analyze verify complained:\n{stderr}");
    // And its hardening scores "OK" or better in systemd's own exposure review.
    let security =
        Command::new("systemd-analyze").args(["security", "--offline=yes"]).arg(&path).output().unwrap();
    let report = String::from_utf8_lossy(&security.stdout);
    let verdict = report.lines().find(|l| l.contains("Overall exposure level")).unwrap_or_default();
    assert!(
        verdict.contains(" OK") || verdict.contains("SAFE"),
        "systemd-analyze security: {verdict}\n{report}"
    );
}

/// The DNS names in a PEM certificate's subject alternative name.
fn dns_names(pem: &Path) -> Vec<String> {
    use x509_parser::prelude::*;
    let der = hanoi247::trust::tls::load_certs(pem).unwrap().remove(0);
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    let san = cert.subject_alternative_name().unwrap().expect("a SAN extension");
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some((*dns).to_owned()),
            _ => None,
        })
        .collect()
}

/// `deploy/compose-prepare.sh` turns `init`'s output into configs for compose.yaml: listeners on
/// 0.0.0.0, the data volume, peers by service name, node certificates (made with openssl from
/// init's network CA) that name the service. Containers cannot run here, so the prepared files
/// are used by in-process nodes on loopback (endpoints pointed at `localhost`, which the new
/// certificates also name): a request goes VN → FR over mutual TLS with the openssl certificates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_prepare_makes_working_configs_and_certificates_for_service_names() {
    if Command::new("openssl").arg("version").output().is_err() {
        skipped("openssl not installed (compose-prepare.sh needs it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let net = dir.path().join("net");
    let init = Command::new(BIN)
        .args(["init", "--out"])
        .arg(&net)
        .args(["--nodes", "VN,FR,DE", "--base-port", "7247"])
        .output()
        .unwrap();
    assert!(init.status.success(), "init failed: {}", String::from_utf8_lossy(&init.stderr));
    let prepare = Command::new("bash")
        .arg(deploy("compose-prepare.sh"))
        .arg(&net)
        .env("HANOI247", BIN)
        .output()
        .unwrap();
    assert!(
        prepare.status.success(),
        "compose-prepare.sh failed: {}",
        String::from_utf8_lossy(&prepare.stderr)
    );

    let compose = std::fs::read_to_string(deploy("compose.yaml")).unwrap();
    let mut configs = Vec::new();
    for (cc, i) in [("vn", 0u16), ("fr", 1), ("de", 2)] {
        let prepared = net.join("compose").join(cc);
        let config = NodeConfig::load(&prepared.join("node.toml")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.data_dir, Path::new("/var/lib/hanoi247"));
        let (peer, desk, metrics) = (7247 + 10 * i, 7248 + 10 * i, 7249 + 10 * i);
        assert_eq!(config.listen.peer, SocketAddr::from(([0, 0, 0, 0], peer)));
        assert_eq!(config.listen.desk, SocketAddr::from(([0, 0, 0, 0], desk)));
        // Metrics stay on the container's loopback (issue 14; tamper_evidence checks the rest).
        assert_eq!(config.metrics.listen, SocketAddr::from(([127, 0, 0, 1], metrics)));
        assert_eq!(config.tls.network_ca, prepared.join("network-ca.pem"));
        let public_key =
            hanoi247::trust::directory::PublicKey::from_hex(&config.directory.public_key).unwrap();
        let directory = hanoi247::trust::directory::Directory::load_verified(
            &config.directory.file,
            &public_key,
            &config.network,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        for entry in &directory.members {
            assert_eq!(entry.host(), entry.code.as_str().to_lowercase(), "{cc}: {}", entry.endpoint);
        }
        let own = directory.member(config.code).unwrap();
        assert_eq!(
            own.certificate_sha256,
            hanoi247::trust::directory::fingerprint_of_file(&config.tls.cert).unwrap()
        );
        let names = dns_names(&config.tls.cert);
        assert!(names.contains(&cc.to_owned()) && names.contains(&"localhost".to_owned()), "{cc}: {names:?}");
        // compose.yaml mounts this directory for the service and publishes its desk and metrics.
        assert!(
            compose.contains(&format!("/compose/{cc}:/etc/hanoi247:ro")),
            "compose.yaml does not mount {cc}"
        );
        assert!(
            compose.contains(&format!("\"127.0.0.1:{desk}:{desk}\"")),
            "compose.yaml does not publish {desk}"
        );
        configs.push(config);
    }

    // VN and FR from the prepared files, on loopback: data in the temp dir, ports from the OS.
    let (mut vn_config, mut fr_config) = (configs.remove(0), configs.remove(0));
    let mut listeners = Vec::new();
    for (config, name) in [(&mut vn_config, "vn"), (&mut fr_config, "fr")] {
        config.data_dir = dir.path().join(format!("{name}-data"));
        let peer = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let desk = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        config.listen.peer = peer.local_addr().unwrap();
        config.listen.desk = desk.local_addr().unwrap();
        config.metrics.listen = "127.0.0.1:0".parse().unwrap();
        listeners.push((peer, desk));
    }
    let fr_peer = fr_config.listen.peer.port();
    // VN's own copy of the prepared directory, with FR where the test's FR listens.
    let vn_directory = dir.path().join("vn-directory.toml");
    std::fs::copy(&vn_config.directory.file, &vn_directory).unwrap();
    let secretariat = hanoi247::trust::directory::SecretariatKey::load(&net.join("secretariat.key")).unwrap();
    sign_with(&vn_directory, &secretariat, |directory| {
        for entry in &mut directory.members {
            entry.endpoint = format!("localhost:{}", if entry.code == code("FR") { fr_peer } else { 9 });
        }
    });
    vn_config.directory.file = vn_directory;
    let vn_desk = vn_config.listen.desk;
    let fr_desk = fr_config.listen.desk;
    let (fr_listeners, vn_listeners) = (listeners.pop().unwrap(), listeners.pop().unwrap());
    let vn = hanoi247::node::RunningNode::start_on(vn_config, vn_listeners.0, vn_listeners.1).await.unwrap();
    let fr = hanoi247::node::RunningNode::start_on(fr_config, fr_listeners.0, fr_listeners.1).await.unwrap();

    let desk = |cc: &str, address: SocketAddr| {
        let mut client = ClientConfig::load(&net.join(cc).join("officer.client.toml")).unwrap();
        client.endpoint = address.to_string();
        desk_client::connect(&client).unwrap()
    };
    let (mut vn_desk, mut fr_desk) = (desk("vn", vn_desk), desk("fr", fr_desk));
    let id = submit(&mut vn_desk, preservation_request("FR")).await;
    wait_state(&mut fr_desk, &id, MessageState::Received).await;
    wait_state(&mut vn_desk, &id, MessageState::Delivered).await;
    vn.shutdown().await.unwrap();
    fr.shutdown().await.unwrap();
}
