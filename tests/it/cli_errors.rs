//! Issues 18 and 20 (a CLI that scripts well, errors a person can act on): the real binary's
//! common failures, each with its documented exit code and one line that names the file or
//! config key and says what to do, with no cause said twice and no transport internals.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use hanoi247::domain::access::Role;
use hanoi247::proto::MessageState;

use crate::support::*;

/// What a run of the binary did.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// The one `error:` line (nodes log to stderr too); fails the test unless there is exactly one.
    fn error_line(&self) -> &str {
        let lines: Vec<&str> = self.stderr.lines().filter(|l| l.starts_with("error: ")).collect();
        assert_eq!(lines.len(), 1, "one error line expected:\n{}", self.stderr);
        lines[0]
    }
}

/// Runs the binary with `args` (and `env`, in `dir` when given), off the async workers.
async fn cli_in(args: Vec<String>, env: Vec<(&'static str, String)>, dir: Option<PathBuf>) -> Run {
    let output = tokio::task::spawn_blocking(move || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_hanoi247"));
        command.args(args).env_remove("HANOI247_CONFIG").envs(env);
        if let Some(dir) = dir {
            command.current_dir(dir);
        }
        command.output().unwrap()
    })
    .await
    .unwrap();
    Run {
        code: output.status.code().expect("exited, not killed"),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

async fn cli(args: &[&str]) -> Run {
    cli_in(args.iter().map(|a| (*a).to_owned()).collect(), Vec::new(), None).await
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// The checks every failure line passes: the exit code, the words it must hold, no cause said
/// twice (no part of the line, between ": ", repeated), no transport internals.
fn assert_failure(run: &Run, code: i32, must_hold: &[&str]) {
    assert_eq!(run.code, code, "exit code\nstdout: {}\nstderr: {}", run.stdout, run.stderr);
    let line = run.error_line();
    for words in must_hold {
        assert!(line.contains(words), "expected {words:?} in: {line}");
    }
    let parts: Vec<&str> = line.split(": ").map(str::trim).filter(|p| p.len() > 12).collect();
    for (i, part) in parts.iter().enumerate() {
        assert!(!parts[i + 1..].contains(part), "{part:?} said twice: {line}");
    }
    for internal in ["tonic::transport", "hyper::Error", "Custom {", "Os {", "source:"] {
        assert!(!run.stderr.contains(internal), "internals ({internal}) shown: {}", run.stderr);
    }
}

/// A copy of `node`'s config with other ports (and the same data directory): a second node.
async fn second_config(net: &Network, node: &str) -> PathBuf {
    let original = net.config_path(node);
    let config = net.config(node);
    let mut text = std::fs::read_to_string(&original).unwrap();
    for address in [config.listen.peer, config.listen.desk, config.metrics.listen, config.console.listen] {
        text = text.replace(&address.to_string(), &format!("127.0.0.1:{}", free_port().await));
    }
    let second = original.with_file_name("second.toml");
    std::fs::write(&second, text).unwrap();
    second
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_cannot_start_names_the_file_and_config_key_and_what_to_do() {
    let net = Network::new(&["VN"]).await;
    let config = path(&net.config_path("VN"));

    // A missing revocation list: the file, its key and the config, once.
    let crl = net.config("VN").tls.peer_crl.unwrap();
    let kept = crl.with_extension("kept");
    std::fs::rename(&crl, &kept).unwrap();
    let run = cli(&["node", "--config", &config]).await;
    assert_failure(
        &run,
        8,
        &[
            "network-ca.crl: file not found",
            "(config key tls.peer_crl in ",
            "node.toml",
            "install the file there or correct the key",
        ],
    );
    assert!(!run.error_line().contains("os error"), "{}", run.error_line());
    // The cause only with --verbose, below the line, once.
    let verbose = cli(&["node", "--config", &config, "--verbose"]).await;
    assert_eq!(verbose.code, 8);
    let causes: Vec<&str> = verbose.stderr.lines().filter(|l| l.starts_with("  caused by: ")).collect();
    assert_eq!(causes.len(), 1, "{}", verbose.stderr);
    assert!(
        causes[0].ends_with("network-ca.crl: No such file or directory (os error 2)"),
        "{}",
        verbose.stderr
    );
    std::fs::rename(&kept, &crl).unwrap();

    // The same with --json: one object on stderr naming the key.
    std::fs::rename(&crl, &kept).unwrap();
    let run = cli(&["node", "--config", &config, "--json"]).await;
    assert_eq!(run.code, 8);
    let last = run.stderr.lines().last().unwrap();
    let value: serde_json::Value = serde_json::from_str(last).unwrap();
    assert_eq!(value["error"]["code"], 8, "{last}");
    assert_eq!(value["error"]["kind"], "config", "{last}");
    assert_eq!(value["error"]["config_key"], "tls.peer_crl", "{last}");
    assert!(value["error"]["file"].as_str().unwrap().ends_with("network-ca.crl"), "{last}");
    std::fs::rename(&kept, &crl).unwrap();

    // A key that is not the certificate's: both files and both keys named.
    net.edit_config("VN", "key = \"node.key\"", "key = \"desk.key\"");
    let run = cli(&["node", "--config", &config]).await;
    assert_failure(
        &run,
        8,
        &[
            "the key ",
            "desk.key does not match the certificate ",
            "node.pem",
            "tls.key and tls.cert",
            "issue a new pair",
        ],
    );
    assert!(!run.stderr.contains("KeyMismatch"), "{}", run.stderr);
    net.edit_config("VN", "key = \"desk.key\"", "key = \"node.key\"");

    // A config file that is not there.
    let missing = net.dir().join("nowhere.toml");
    let run = cli(&["node", "--config", &path(&missing)]).await;
    assert_failure(&run, 8, &["nowhere.toml: config file not found", "HANOI247_CONFIG"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_node_on_a_data_directory_is_asked_whether_another_is_running() {
    let net = Network::new(&["VN"]).await;
    let _running = net.spawn("VN").await;
    let second = second_config(&net, "VN").await;
    let run = cli(&["node", "--config", &path(&second)]).await;
    let data_dir = net.config("VN").data_dir;
    assert_failure(
        &run,
        1,
        &[
            &format!("the data directory {} is in use: is another node running?", data_dir.display()),
            "config key data_dir in ",
            "second.toml",
        ],
    );
    assert!(!run.stderr.contains("WouldBlock"), "{}", run.stderr);

    // The same config again, ports and all: the listener's key is named.
    let run = cli(&["node", "--config", &path(&net.config_path("VN"))]).await;
    assert_failure(
        &run,
        1,
        &["cannot listen on 127.0.0.1:", "(config key listen.", "is another node running?"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_client_is_told_so_and_watch_ends_instead_of_retrying() {
    let clients =
        [("VN", "officer", Role::Officer), ("VN", "operator", Role::Operator), ("VN", "gone", Role::Officer)];
    let net = Network::with_clients(&["VN"], &clients).await;
    let node = net.spawn("VN").await;
    let gone = path(&net.client_config_path_of("VN", "gone"));
    let run = cli(&["inbox", "--config", &gone]).await;
    assert_eq!(run.code, 0, "before revocation: {}", run.stderr);

    let mut watch = Command::new(env!("CARGO_BIN_EXE_hanoi247"))
        .args(["watch", "--config", &gone])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();

    let cert = net.client_config_path_of("VN", "gone").with_file_name("gone.pem");
    let revoke =
        cli(&["certs", "revoke", "--config", &path(&net.config_path("VN")), "--cert", &path(&cert)]).await;
    assert_eq!(revoke.code, 0, "{}", revoke.stderr);
    node.hangup();

    let mut refused = None;
    eventually("the revoked client is refused", async || {
        let run = cli(&["inbox", "--config", &gone]).await;
        let done = run.code != 0;
        refused = Some(run);
        done
    })
    .await;
    let run = refused.unwrap();
    assert_failure(
        &run,
        9,
        &[
            "refused this client's certificate ",
            "gone.pem: revoked or unknown",
            "CertificateRevoked",
            "certs issue",
        ],
    );

    // `watch` ends by itself with the same code.
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = watch.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = watch.kill();
            panic!("watch still retrying {DEADLINE:?} after its certificate was revoked");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut said = String::new();
    std::io::Read::read_to_string(watch.stderr.as_mut().unwrap(), &mut said).unwrap();
    assert_eq!(status.code(), Some(9), "{said}");
    assert!(said.contains("refused this client's certificate"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_wrong_ca_refused_and_not_found_have_their_codes() {
    let mut net = Network::new(&["VN", "FR"]).await;
    net.start("VN").await;
    let vn_officer = net.client_config_path("VN");

    // FR is not running.
    let fr_officer = path(&net.client_config_path("FR"));
    let fr_desk = net.config("FR").listen.desk;
    let run = cli(&["inbox", "--config", &fr_officer]).await;
    assert_failure(
        &run,
        5,
        &[
            &format!("cannot reach the node at {fr_desk}: connection refused; is it running?"),
            "officer.client.toml",
        ],
    );
    let run = cli(&["inbox", "--config", &fr_officer, "--json"]).await;
    assert_eq!(run.code, 5);
    let value: serde_json::Value =
        serde_json::from_str(run.stderr.trim()).expect("one JSON object on stderr");
    assert_eq!(value["error"]["kind"], "unreachable");
    assert_eq!(value["error"]["config_key"], "endpoint");

    // The client trusts FR's local CA, but talks to VN: the node's certificate is not trusted.
    let vn_dir = vn_officer.parent().unwrap();
    let wrong_ca = vn_dir.join("wrong-ca.client.toml");
    let text = std::fs::read_to_string(&vn_officer).unwrap();
    assert!(text.contains("ca = \"local-ca.pem\""), "{text}");
    std::fs::write(&wrong_ca, text.replace("ca = \"local-ca.pem\"", "ca = \"../fr/local-ca.pem\"")).unwrap();
    let run = cli(&["inbox", "--config", &path(&wrong_ca)]).await;
    assert_failure(
        &run,
        9,
        &["presented a certificate that ", "fr/local-ca.pem does not trust", "UnknownIssuer"],
    );

    // A client certificate from FR's CA presented to VN: refused as unknown.
    let foreign = vn_dir.join("foreign.client.toml");
    let endpoint = format!("127.0.0.1:{}", net.config("VN").listen.desk.port());
    let fr_dir = net.client_config_path("FR").parent().unwrap().to_owned();
    std::fs::write(
        &foreign,
        format!(
            "endpoint = \"{endpoint}\"\nca = \"local-ca.pem\"\ncert = \"{}\"\nkey = \"{}\"\n",
            fr_dir.join("officer.pem").display(),
            fr_dir.join("officer.key").display()
        ),
    )
    .unwrap();
    let run = cli(&["inbox", "--config", &path(&foreign)]).await;
    assert_failure(&run, 9, &["refused this client's certificate", "revoked or unknown"]);

    // An officer calling an operator's command: refused, the node's words once.
    let out = net.dir().join("vn.backup");
    let run = cli(&["backup", "--config", &path(&vn_officer), "--out", &path(&out)]).await;
    assert_failure(&run, 3, &["the node refused: ", "may not call Backup", "PermissionDenied"]);
    assert_eq!(run.stderr.matches("may not call Backup").count(), 1, "{}", run.stderr);

    // A message that does not exist; an id that is not one (the field named).
    let run = cli(&["show", "8a0b1c2d-0000-4000-8000-000000000000", "--config", &path(&vn_officer)]).await;
    assert_failure(&run, 4, &["not found: ", "8a0b1c2d-0000-4000-8000-000000000000"]);
    let run = cli(&["show", "abc", "--config", &path(&vn_officer)]).await;
    assert_failure(&run, 3, &["id: 'abc' is not a message id", "InvalidArgument"]);

    // A missing key file of the client: the file and its key.
    let keyless = vn_dir.join("keyless.client.toml");
    std::fs::write(&keyless, text.replace("key = \"officer.key\"", "key = \"lost.key\"")).unwrap();
    let run = cli(&["inbox", "--config", &path(&keyless)]).await;
    assert_failure(&run, 8, &["lost.key: file not found (config key key in ", "keyless.client.toml"]);

    // Usage: clap's own code, and with --json one object too.
    let run = cli(&["inbox", "--config", &path(&vn_officer), "--limit", "many"]).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    let run = cli(&["inbox", "--config", &path(&vn_officer), "--limit", "many", "--json"]).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    let value: serde_json::Value =
        serde_json::from_str(run.stderr.trim()).expect("one JSON object on stderr");
    assert_eq!(value["error"]["kind"], "usage");
    assert!(value["error"]["message"].as_str().unwrap().contains("--limit"), "{value}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_accepts_but_never_answers_ends_at_the_deadline() {
    let net = Network::new(&["VN"]).await;
    // Accepts every connection and holds it without a byte: the TLS handshake never finishes.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            sockets.push(socket);
        }
    });
    let officer = net.client_config_path("VN");
    let text = std::fs::read_to_string(&officer).unwrap();
    let desk = net.config("VN").listen.desk.to_string();
    let hung = officer.with_file_name("hung.client.toml");
    std::fs::write(&hung, text.replace(&desk, &format!("127.0.0.1:{port}"))).unwrap();

    let started = Instant::now();
    let run = cli(&["inbox", "--config", &path(&hung), "--timeout", "1s"]).await;
    let took = started.elapsed();
    assert_failure(
        &run,
        6,
        &[&format!("no answer from the node at 127.0.0.1:{port} within 1s"), "give a longer --timeout"],
    );
    // Within the deadline, not the 5 s a connection attempt gets by default.
    assert!(took >= Duration::from_secs(1) && took < Duration::from_secs(4), "took {took:?}");
    held.abort();

    // Finishes TLS with the node's own desk certificate, then never says a word of HTTP/2.
    let config = net.config("VN");
    let tls = hanoi247::trust::tls::server_config(
        &config.tls.local_ca,
        &config.tls.desk_cert,
        &config.tls.desk_key,
    )
    .unwrap();
    let mute = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = mute.local_addr().unwrap().port();
    let (handshakes, mut handshaken) = tokio::sync::mpsc::unbounded_channel();
    let held = tokio::spawn(async move {
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let mut streams = Vec::new();
        while let Ok((socket, _)) = mute.accept().await {
            if let Ok(stream) = acceptor.accept(socket).await {
                let _ = handshakes.send(());
                streams.push(stream);
            }
        }
    });
    std::fs::write(&hung, text.replace(&desk, &format!("127.0.0.1:{port}"))).unwrap();
    let started = Instant::now();
    let run = cli(&["outbox", "--config", &path(&hung), "--timeout", "2s"]).await;
    let took = started.elapsed();
    assert!(handshaken.try_recv().is_ok(), "the TLS handshake finished");
    assert_failure(&run, 6, &[&format!("no answer from the node at 127.0.0.1:{port} within 2s")]);
    assert!(took >= Duration::from_secs(2) && took < Duration::from_secs(5), "took {took:?}");
    held.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_comes_from_the_environment_or_the_default_place() {
    let mut net = Network::new(&["VN"]).await;
    net.start("VN").await;
    let officer = net.client_config_path("VN");

    let run = cli_in(vec!["inbox".into()], vec![("HANOI247_CONFIG", path(&officer))], None).await;
    assert_eq!(run.code, 0, "HANOI247_CONFIG: {}", run.stderr);
    assert!(run.stdout.contains("SUBJECT"), "{}", run.stdout);

    // ./client.toml beside its certificates.
    let dir = officer.parent().unwrap().to_owned();
    std::fs::copy(&officer, dir.join("client.toml")).unwrap();
    let run = cli_in(vec!["inbox".into(), "--json".into()], Vec::new(), Some(dir)).await;
    assert_eq!(run.code, 0, "./client.toml: {}", run.stderr);
    assert!(run.stdout.trim_start().starts_with('['), "{}", run.stdout);

    // None anywhere: where it looked, and how to give one.
    let empty = tempfile::tempdir().unwrap();
    let run = cli_in(vec!["queue".into()], Vec::new(), Some(empty.path().to_owned())).await;
    assert_failure(
        &run,
        8,
        &[
            "no config file: give --config FILE or set HANOI247_CONFIG",
            "client.toml and /etc/hanoi247/client.toml",
        ],
    );
    let run = cli_in(vec!["node".into()], Vec::new(), Some(empty.path().to_owned())).await;
    assert_failure(&run, 8, &["no config file", "node.toml and /etc/hanoi247/node.toml"]);

    // A node's config from the environment too: HANOI247_CONFIG naming a file that is not there.
    let env = vec![("HANOI247_CONFIG", path(&empty.path().join("node.toml")))];
    let run = cli_in(vec!["node".into()], env, None).await;
    assert_failure(&run, 8, &["node.toml: config file not found"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_proof_or_backup_is_an_integrity_failure() {
    let mut net = Network::new(&["VN", "FR"]).await;
    net.start("VN").await;
    net.start("FR").await;
    let mut vn = net.desk("VN");
    let id = submit(&mut vn, preservation_request("FR")).await;
    wait_state(&mut vn, &id, MessageState::Delivered).await;

    let officer = path(&net.client_config_path("VN"));
    let file = net.dir().join("proof.json");
    let run = cli(&["show", &id, "--config", &officer, "--proof", &path(&file)]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let run = cli(&["verify", &path(&file), "--json"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let value: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(value["verified"], true, "{value}");
    assert_eq!(value["envelope_id"], id.as_str(), "{value}");

    let text = std::fs::read_to_string(&file).unwrap();
    let tampered = text.replacen("PRESERVATION", "PRESERVATIOM", 1);
    assert_ne!(tampered, text, "the proof names its request type");
    std::fs::write(&file, tampered).unwrap();
    let run = cli(&["verify", &path(&file)]).await;
    assert_failure(&run, 7, &["NOT VERIFIED"]);
    let run = cli(&["verify", &path(&file), "--json"]).await;
    assert_eq!(run.code, 7, "{}", run.stderr);
    let value: serde_json::Value =
        serde_json::from_str(run.stderr.trim()).expect("one JSON object on stderr");
    assert_eq!(value["error"]["kind"], "integrity", "{value}");

    // A backup file that is not one.
    let junk = net.dir().join("junk.backup");
    std::fs::write(&junk, b"not a backup at all").unwrap();
    let target = net.dir().join("restored");
    let run = cli(&["restore", "--in", &path(&junk), "--data-dir", &path(&target)]).await;
    assert_failure(&run, 7, &["not a hanoi247 backup file"]);
}
