//! The `hanoi247` binary: parses the command line and runs the command.

use std::process::ExitCode;

use clap::Parser;
use hanoi247::cli::failure::{self, CliError};
use hanoi247::cli::init::{InitOptions, init_network};
use hanoi247::cli::{Cli, Command, LogFormat};
use hanoi247::config::NodeConfig;
use hanoi247::domain::access::Role;
use hanoi247::domain::identity::NodeCode;
use hanoi247::node::RunningNode;
use tracing_subscriber::EnvFilter;

/// Logs to stderr; colour only when stderr is a terminal, so that files, the journal and log
/// shippers get plain text.
fn init_logging(format: LogFormat, default: &str) {
    use std::io::IsTerminal as _;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Demo => {
            // The story is on stdout; the nodes' own warnings (a stopped peer) would only repeat it.
            init_logging(cli.log_format, "error");
            hanoi247::cli::demo::run().await?;
        }
        Command::Bench(args) if args.peers.is_some() => {
            init_logging(cli.log_format, "error");
            let options = hanoi247::cli::bench_network::NetworkBenchOptions {
                peers: args.peers.unwrap_or_default(),
                settle: args.settle,
                window: args.window.max(std::time::Duration::from_secs(1)),
                keep: args.keep,
            };
            let report = hanoi247::cli::bench_network::run(options).await?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
            } else {
                print!("{}", hanoi247::cli::bench_network::table(&report));
            }
        }
        Command::Bench(args) => {
            init_logging(cli.log_format, "error");
            let options = hanoi247::cli::bench::BenchOptions {
                messages: args.messages,
                concurrency: args.concurrency.max(1),
                size: args.size,
                precedence: hanoi247::cli::precedence(args.precedence),
                latency_samples: args.latency_samples.max(1),
                keep: args.keep,
                startup_messages: args.startup_messages,
                recovery_writes: args.recovery_writes,
                attachment_mib: args.attachment_mib,
            };
            let report = hanoi247::cli::bench::run(options).await?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
            } else {
                print!("{}", hanoi247::cli::bench::table(&report));
            }
        }
        Command::Init(args) => {
            init_logging(cli.log_format, "warn");
            let mut options =
                InitOptions::with_base_port(args.out, args.network, &args.nodes, args.base_port)?;
            for client in &args.clients {
                let mut parts = client.split(':');
                let (Some(node), Some(name), role, None) =
                    (parts.next(), parts.next(), parts.next(), parts.next())
                else {
                    return Err(CliError::Usage(format!(
                        "--clients {client}: expected NODE:NAME or NODE:NAME:ROLE, e.g. VN:alice or FR:cert:agency"
                    )));
                };
                let role = match role.unwrap_or("officer") {
                    "officer" => Role::Officer,
                    "operator" => Role::Operator,
                    "agency" => Role::Agency,
                    "auditor" => Role::Auditor,
                    other => {
                        return Err(CliError::Usage(format!(
                            "--clients {client}: '{other}' is not a role (officer, operator, agency, auditor)"
                        )));
                    }
                };
                let node = node
                    .parse::<NodeCode>()
                    .map_err(|e| CliError::Usage(format!("--clients {client}: {e}")))?;
                options.clients.push((node, name.to_owned(), role));
            }
            let report = init_network(&options)?;
            for (code, path) in &report.node_configs {
                println!("node {code}: hanoi247 node --config {}", path.display());
            }
            for (code, name, path) in &report.client_configs {
                println!("client {name}@{code}: --config {}", path.display());
            }
            for node in &options.nodes {
                println!(
                    "console of {}: https://127.0.0.1:{}/ (import a client's <name>.p12 into the browser)",
                    node.code, node.console_port
                );
            }
        }
        Command::Node { config: path } => {
            init_logging(cli.log_format, "info");
            let path = failure::resolve_config(path.as_deref(), failure::NODE_CONFIG_DEFAULTS)?;
            let config = NodeConfig::load(&path).map_err(failure::config_error)?;
            // Before the node is up: from here on SIGHUP reloads instead of killing the process.
            let hangups = hanoi247::trust::reload::hangup_signal()?;
            let node = RunningNode::start(config.clone())
                .await
                .map_err(|error| failure::node_start(error, &config, &path))?;
            node.forward_hangups(hangups);
            // systemd (Type=notify) hears READY=1 once every listener is bound and serving.
            let systemd = hanoi247::node::systemd::Notifier::from_env().map(std::sync::Arc::new);
            let watchdog = systemd.as_ref().map(|notifier| {
                notifier.notify("READY=1");
                tokio::spawn(ping_watchdog(std::sync::Arc::clone(notifier)))
            });
            shutdown_signal().await?;
            tracing::info!("shutting down");
            if let Some(notifier) = &systemd {
                notifier.notify("STOPPING=1");
            }
            if let Some(watchdog) = watchdog {
                watchdog.abort();
            }
            node.shutdown().await?;
        }
        Command::Directory(command) => {
            init_logging(cli.log_format, "warn");
            hanoi247::cli::run_directory(command, cli.json)?;
        }
        Command::Restore(args) => {
            init_logging(cli.log_format, "warn");
            let config =
                args.config.as_deref().map(NodeConfig::load).transpose().map_err(failure::config_error)?;
            let (target, expect) = match (&args.data_dir, &config, &args.config) {
                (Some(dir), _, _) => (dir.clone(), None),
                (None, Some(config), Some(path)) => {
                    (config.data_dir.clone(), Some((config.code, path.as_path())))
                }
                _ => {
                    return Err(CliError::Usage("restore: give --data-dir DIR or --config NODE.TOML".into()));
                }
            };
            let cert = args.cert.clone().or_else(|| config.as_ref().map(|c| c.tls.cert.clone()));
            let certificate = cert.as_deref().map(hanoi247::trust::tls::load_certs).transpose()?;
            let certificate = certificate.and_then(|certs| certs.first().map(|c| c.to_vec()));
            let check = |node: hanoi247::domain::identity::NodeCode, digest: &[u8; 32], signature: &[u8]| {
                let certificate = certificate.as_deref().unwrap_or_default();
                hanoi247::trust::witness::verify_backup(certificate, node, digest, signature)
                    .map_err(|e| e.to_string())
            };
            let authenticity = hanoi247::store::backup::Authenticity {
                verify: cert.as_deref().map(|path| (&check as _, path)),
                accept_unsigned: args.accept_unsigned,
            };
            let shown = hanoi247::cli::progress(
                cli.json,
                None,
                "{spinner} restore: rebuilding the store ({elapsed})",
            );
            let restored = hanoi247::store::backup::restore(&args.input, &target, expect, &authenticity);
            shown.finish_and_clear();
            let restored = restored?;
            let made = humantime::format_rfc3339_seconds(restored.header.created_at);
            let not_recoverable = if args.recover_from_peers {
                Some(hanoi247::cli::ask_recovery(&target, restored.header.created_at).await?)
            } else {
                None
            };
            if cli.json {
                let value = serde_json::json!({
                    "recover_from_peers": args.recover_from_peers,
                    "not_recoverable": not_recoverable,
                    "node": restored.header.node.as_str(),
                    "created_at": made.to_string(),
                    "data_dir": target.display().to_string(),
                    "messages": restored.imported.messages,
                    "events": restored.imported.events,
                    "records": restored.imported.records,
                });
                println!("{}", serde_json::to_string_pretty(&value).unwrap_or_default());
                return Ok(());
            }
            println!(
                "restored node {}'s store (backup taken {made}) into {}: messages {}, events {}, records {}",
                restored.header.node,
                target.display(),
                restored.imported.messages,
                restored.imported.events,
                restored.imported.records
            );
            if let Some(lost) = not_recoverable {
                println!(
                    "recovery from peers: the node asks each peer, when it starts, for what they exchanged since shortly before the backup, retrying peers that are down until each answers (see its log and audit log: RECOVERED_FROM_PEER)"
                );
                println!("cannot come back from peers:");
                for item in lost {
                    println!("  - {item}");
                }
            }
        }
        Command::Inspect(args) => {
            init_logging(cli.log_format, "warn");
            hanoi247::cli::inspect::run(&args)?;
        }
        Command::Certs(args) => {
            init_logging(cli.log_format, "warn");
            hanoi247::cli::run_certs(args)?;
        }
        command => {
            init_logging(cli.log_format, "warn");
            hanoi247::cli::run_client(command, cli.json, cli.timeout).await?;
        }
    }
    Ok(())
}

/// Sends `WATCHDOG=1` every half of `WATCHDOG_USEC` while the runtime runs (a hung runtime
/// stops the pings, and systemd restarts the node).
async fn ping_watchdog(notifier: std::sync::Arc<hanoi247::node::systemd::Notifier>) {
    let Some(every) = hanoi247::node::systemd::Notifier::watchdog_interval() else { return };
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        notifier.notify("WATCHDOG=1");
    }
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() -> std::io::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result,
        _ = term.recv() => Ok(()),
    }
}

/// Lets a command whose output goes into a closed pipe (`hanoi247 inbox | head`) end quietly, as
/// Unix tools do, instead of panicking in `println!`. Not for the long-running commands: a node
/// must never die of a signal, and `watch` outlives its node's restarts, where a write to the
/// closed socket would raise SIGPIPE too; `watch` ends on a closed stdout by itself (exit 0).
fn die_quietly_on_closed_stdout() {
    // SAFETY: called first thing in `main`, before any other thread exists; setting a signal's
    // disposition to the default has no memory effects.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Says why a command failed: one line (or one JSON object) on stderr; the causes below it only
/// with `--verbose`, and in the debug log.
fn report(error: &CliError, json: bool, verbose: bool) {
    let causes = error.causes();
    tracing::debug!(?causes, "{error}");
    if json {
        let mut value = error.json();
        if verbose {
            value["error"]["causes"] = serde_json::json!(causes);
        }
        eprintln!("{value}");
    } else {
        eprintln!("error: {error}");
        if verbose {
            for cause in causes {
                eprintln!("  caused by: {cause}");
            }
        }
    }
}

/// Parses the command line; a usage error is said as clap says it (exit 2), or as one JSON
/// object with `--json`.
fn parse() -> Result<Cli, ExitCode> {
    match Cli::try_parse() {
        Ok(cli) => Ok(cli),
        Err(error) if !error.use_stderr() => {
            // --help and --version.
            let _ = error.print();
            Err(ExitCode::SUCCESS)
        }
        Err(error) if std::env::args().any(|a| a == "--json") => {
            let rendered = error.render().to_string();
            let line = rendered.lines().next().unwrap_or_default().trim_start_matches("error: ");
            report(&CliError::Usage(line.to_owned()), true, false);
            Err(ExitCode::from(failure::ExitKind::Usage.code()))
        }
        Err(error) => error.exit(),
    }
}

fn main() -> ExitCode {
    let cli = match parse() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let (json, verbose) = (cli.json, cli.verbose);
    if !matches!(
        cli.command,
        Command::Node { .. } | Command::Demo | Command::Bench(_) | Command::Watch { .. }
    ) {
        die_quietly_on_closed_stdout();
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            report(&CliError::Io(error), json, verbose);
            return ExitCode::from(failure::ExitKind::Internal.code());
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            report(&error, json, verbose);
            ExitCode::from(error.exit_kind().code())
        }
    }
}
