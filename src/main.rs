//! The `hanoi247` binary: parses the command line and runs the command.

use std::process::ExitCode;

use clap::Parser;
use hanoi247::cli::init::{InitOptions, init_network};
use hanoi247::cli::{Cli, Command, LogFormat};
use hanoi247::config::NodeConfig;
use hanoi247::domain::access::Role;
use hanoi247::domain::identity::NodeCode;
use hanoi247::node::RunningNode;
use tracing_subscriber::EnvFilter;

fn init_logging(format: LogFormat, default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Demo => {
            // The story is on stdout; the nodes' own warnings (a stopped peer) would only repeat it.
            init_logging(cli.log_format, "error");
            hanoi247::cli::demo::run().await?;
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
            };
            let report = hanoi247::cli::bench::run(options).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
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
                    anyhow::bail!(
                        "--clients {client}: expected NODE:NAME or NODE:NAME:ROLE, e.g. VN:alice or FR:cert:agency"
                    );
                };
                let role = match role.unwrap_or("officer") {
                    "officer" => Role::Officer,
                    "operator" => Role::Operator,
                    "agency" => Role::Agency,
                    "auditor" => Role::Auditor,
                    other => anyhow::bail!(
                        "--clients {client}: '{other}' is not a role (officer, operator, agency, auditor)"
                    ),
                };
                options.clients.push((node.parse::<NodeCode>()?, name.to_owned(), role));
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
        Command::Node { config } => {
            init_logging(cli.log_format, "info");
            let config = NodeConfig::load(&config)?;
            // Before the node is up: from here on SIGHUP reloads instead of killing the process.
            let hangups = hanoi247::trust::reload::hangup_signal()?;
            let node = RunningNode::start(config).await?;
            node.forward_hangups(hangups);
            shutdown_signal().await?;
            tracing::info!("shutting down");
            node.shutdown().await?;
        }
        Command::Directory(command) => {
            init_logging(cli.log_format, "warn");
            hanoi247::cli::run_directory(command)?;
        }
        Command::Restore(args) => {
            init_logging(cli.log_format, "warn");
            let config = args.config.as_deref().map(NodeConfig::load).transpose()?;
            let (target, expect) = match (&args.data_dir, &config, &args.config) {
                (Some(dir), _, _) => (dir.clone(), None),
                (None, Some(config), Some(path)) => {
                    (config.data_dir.clone(), Some((config.code, path.as_path())))
                }
                _ => anyhow::bail!("restore: give --data-dir DIR or --config NODE.TOML"),
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
            let restored = hanoi247::store::backup::restore(&args.input, &target, expect, &authenticity)?;
            let made = humantime::format_rfc3339_seconds(restored.header.created_at);
            println!(
                "restored node {}'s store (backup taken {made}) into {}: messages {}, events {}, records {}",
                restored.header.node,
                target.display(),
                restored.imported.messages,
                restored.imported.events,
                restored.imported.records
            );
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
            hanoi247::cli::run_client(command).await?;
        }
    }
    Ok(())
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(
        cli.command,
        Command::Node { .. } | Command::Demo | Command::Bench(_) | Command::Watch { .. }
    ) {
        die_quietly_on_closed_stdout();
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
