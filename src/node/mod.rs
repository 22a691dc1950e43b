//! One running node: opens the store, serves the peer and desk listeners, runs one delivery task
//! per directory peer, and shuts all of it down gracefully (stop accepting, let in-flight calls
//! and writes finish, make the store durable and checkpoint it).
//!
//! The composition root: it may import every layer but `cli`, and holds no business rule of
//! its own — it wires, schedules (deadline watch, retention, reloads) and serves metrics.

pub mod deadline_watch;
pub mod metrics_listener;
pub mod retention;
pub mod systemd;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::Server;
use tower::util::MapResponseLayer;

use crate::config::NodeConfig;
use crate::domain::clock::Clock;
use crate::domain::identity::NodeCode;
use crate::proto::desk_service_server::DeskServiceServer;
use crate::proto::peer_service_server::PeerServiceServer;
use crate::runtime::context::NodeContext;
use crate::store::{Store, StoreError};
use crate::trust::admission::{Admission, Refusal, RefusalCounter};
use crate::trust::tls::{self, TlsError};

pub use crate::runtime::context::SOFTWARE_VERSION;

/// Room for the request around the envelopes, so that the decode limit refuses only what
/// validation would refuse anyway (and validation gives the clearer message).
const MESSAGE_SLACK: usize = 64 * 1024;

/// How long in-flight calls may take to finish once shutdown starts.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A node could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The store could not be opened or flushed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// Certificates or keys could not be loaded.
    #[error("{0}")]
    Tls(#[from] TlsError),
    /// A listener could not be bound or served.
    #[error("listener {address}: {source}")]
    Listen {
        /// The address.
        address: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// Server reflection could not be set up from the compiled descriptors.
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The signed directory could not be loaded or is not signed by the secretariat.
    #[error("directory: {0}")]
    Directory(#[from] crate::trust::directory::DirectoryError),
    /// The node key cannot sign envelopes and receipts.
    #[error("signing key: {0}")]
    Signing(#[from] crate::trust::signing::SigningError),
    /// The directory file is older than one this node already used.
    #[error(
        "directory {file}: version {using} is older than version {seen}, which this node already used; install the current signed directory (a node never goes back to an older one)"
    )]
    DirectoryRollback {
        /// The directory file.
        file: String,
        /// Its version.
        using: u64,
        /// The highest version used before.
        seen: u64,
    },
    /// A `[notify]` target cannot be used (a file it names is missing or unreadable).
    #[error("{0}")]
    Notify(#[from] crate::runtime::notify::NotifyError),
    /// The node's own certificate does not name this node.
    #[error("certificate {path}: {message}")]
    Identity {
        /// The certificate file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// A node that is serving; dropping it does not stop it, [`RunningNode::shutdown`] does.
pub struct RunningNode {
    /// Where the peer listener accepts.
    pub peer_addr: SocketAddr,
    /// Where the desk listener accepts.
    pub desk_addr: SocketAddr,
    /// Where the metrics listener accepts.
    pub metrics_addr: SocketAddr,
    /// Where the desk console accepts.
    pub console_addr: SocketAddr,
    /// The shared state (for tests and the demo to look at).
    pub context: Arc<NodeContext>,
    stop: CancellationToken,
    tasks: TaskTracker,
    tls: Arc<tls::NodeTls>,
    health: tonic_health::server::HealthReporter,
}

impl RunningNode {
    /// Binds the configured listeners and starts.
    pub async fn start(config: NodeConfig) -> Result<Self, NodeError> {
        let peer = bind(config.listen.peer).await?;
        let desk = bind(config.listen.desk).await?;
        Self::start_on(config, peer, desk).await
    }

    /// Starts on listeners the caller bound (the demo and tests bind port 0).
    pub async fn start_on(
        config: NodeConfig,
        peer: TcpListener,
        desk: TcpListener,
    ) -> Result<Self, NodeError> {
        Self::start_with_clock(config, peer, desk, Clock::system()).await
    }

    /// Like [`RunningNode::start_on`], with `clock` as the node's "now" for deadlines, expiry
    /// and retention: tests pass a manual clock and move it instead of waiting.
    pub async fn start_with_clock(
        config: NodeConfig,
        peer: TcpListener,
        desk: TcpListener,
        clock: Clock,
    ) -> Result<Self, NodeError> {
        let notify_targets = crate::runtime::notify::prepare(&config.notify)?;
        let (context, node_tls) = open(config, clock).await?;
        let client_tls = node_tls.client_config();
        let config = &context.config;
        let addr = |listener: &TcpListener, address| {
            listener.local_addr().map_err(|source| NodeError::Listen { address, source })
        };
        let (peer_addr, desk_addr) = (addr(&peer, config.listen.peer)?, addr(&desk, config.listen.desk)?);
        let metrics = bind(config.metrics.listen).await?;
        let metrics_addr = addr(&metrics, config.metrics.listen)?;
        let console = bind(config.console.listen).await?;
        let console_addr = addr(&console, config.console.listen)?;

        let context = Arc::new(context);
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();

        let peer_service =
            PeerServiceServer::new(crate::rpc::peer_service::PeerApi::new(Arc::clone(&context)))
                .max_decoding_message_size(crate::domain::validation::MAX_BATCH_BYTES + MESSAGE_SLACK);
        let peer_incoming = tls::incoming_reloadable(
            peer,
            node_tls.peer_server(),
            admission(&context, "peer", true),
            stop.clone(),
            &tasks,
        );
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<PeerServiceServer<crate::rpc::peer_service::PeerApi>>().await;
        health.set_serving::<DeskServiceServer<crate::rpc::desk_service::DeskApi>>().await;
        // Reflection v1 and the older v1alpha, which Python's grpcio-reflection and older grpcurl
        // speak.
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(crate::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let catch_panic = |listener| {
            crate::runtime::catch_panic::CatchPanicLayer::new(
                listener,
                crate::runtime::catch_panic::PanicAnswer::Grpc,
                context.metrics.panics.clone(),
            )
        };
        let peer_server = bounded_server(&context.config.limits)
            .layer(catch_panic("peer"))
            .layer(MapResponseLayer::new(crate::rpc::codec::oversized_is_resource_exhausted))
            .add_service(health_service.clone())
            .add_service(reflection().build_v1()?)
            .add_service(reflection().build_v1alpha()?)
            .add_service(peer_service)
            .serve_with_incoming_shutdown(peer_incoming, stop.clone().cancelled_owned());
        tasks.spawn(serve("peer", peer_addr, stop.clone(), peer_server));

        // One desk for both of its edges (gRPC and console); its stream tasks run on `tasks`.
        let operations = Arc::new(crate::desk::Desk::new(Arc::clone(&context), stop.clone(), tasks.clone()));
        let desk_service =
            DeskServiceServer::new(crate::rpc::desk_service::DeskApi::new(Arc::clone(&operations)))
                .max_decoding_message_size(desk_decode_limit(&context.config.limits));
        let desk_incoming = tls::incoming_reloadable(
            desk,
            node_tls.desk_server(),
            admission(&context, "desk", false),
            stop.clone(),
            &tasks,
        );
        let desk_server = bounded_server(&context.config.limits)
            .layer(catch_panic("desk"))
            .layer(MapResponseLayer::new(crate::rpc::codec::oversized_is_resource_exhausted))
            .add_service(health_service)
            .add_service(reflection().build_v1()?)
            .add_service(reflection().build_v1alpha()?)
            .add_service(desk_service)
            .serve_with_incoming_shutdown(desk_incoming, stop.clone().cancelled_owned());
        tasks.spawn(serve("desk", desk_addr, stop.clone(), desk_server));

        tasks.spawn(supervise_deliveries(Arc::clone(&context), client_tls, stop.clone(), tasks.clone()));
        context.reload.watch_file(context.directory.path().to_owned());
        for file in node_tls.files() {
            context.reload.watch_file(file);
        }
        tasks.spawn(context.reload.clone().poll_files(context.config.reload.poll_interval, stop.clone()));
        tasks.spawn(reload_directory(Arc::clone(&context), stop.clone()));
        if let Some(source) = context.clients.source() {
            context.reload.watch_file(source.to_owned());
        }
        tasks.spawn(reload_clients(Arc::clone(&context), Arc::clone(&node_tls), stop.clone()));
        tasks.spawn(crate::node::deadline_watch::run(Arc::clone(&context), stop.clone()));
        tasks.spawn(crate::node::retention::run(Arc::clone(&context), stop.clone()));
        // Whether the store takes writes, as far as anyone can tell: what health, /readyz and
        // hanoi247_store_writable say.
        let writable = tokio::sync::watch::Sender::new(true);
        tasks.spawn(keep_store_writable(context.store.clone(), writable.clone(), stop.clone()));
        tasks.spawn(crate::runtime::notify::run(Arc::clone(&context), notify_targets, stop.clone()));
        tasks.spawn(crate::runtime::notify::watch_expiry(Arc::clone(&context), stop.clone()));
        tasks.spawn(reload_tls_on_trigger(Arc::clone(&node_tls), Arc::clone(&context), stop.clone()));
        let metrics_server =
            metrics_listener::serve(metrics, Arc::clone(&context), writable.subscribe(), stop.clone());
        let metrics_stop = stop.clone();
        tasks.spawn(async move {
            if let Err(error) = metrics_server.await {
                tracing::error!(%error, "metrics listener failed; stopping the node");
                metrics_stop.cancel();
            }
        });
        let console_server = crate::console::serve(
            console,
            node_tls.desk_server(),
            admission(&context, "console", false),
            operations,
            stop.clone(),
            tasks.clone(),
        );
        let console_stop = stop.clone();
        tasks.spawn(async move {
            if let Err(error) = console_server.await {
                tracing::error!(%error, "console listener failed; stopping the node");
                console_stop.cancel();
            }
        });
        tasks.spawn(report_health(writable.subscribe(), health.clone(), stop.clone()));
        tracing::info!(node = %context.code(), %peer_addr, %desk_addr, %metrics_addr, %console_addr, "node started");
        Ok(Self {
            peer_addr,
            desk_addr,
            metrics_addr,
            console_addr,
            context,
            stop,
            tasks,
            tls: node_tls,
            health,
        })
    }

    /// Fires the node's reload trigger for every SIGHUP received on `signal`, until the node
    /// stops (a task of the node, so shutdown waits for it).
    pub fn forward_hangups(&self, signal: tokio::signal::unix::Signal) {
        let trigger = self.context.reload.clone();
        self.tasks.spawn(crate::trust::reload::forward_hangups(signal, trigger, self.stop.clone()));
    }

    /// Reloads the TLS material now, as SIGHUP does (a hook for other triggers and for
    /// in-process nodes).
    pub fn reload_tls(&self) -> Result<tls::ReloadReport, TlsError> {
        let report = self.tls.reload()?;
        self.context
            .signer
            .reload(&self.context.config.tls)
            .map_err(|e| TlsError::Reload(format!("signing key: {e}")))?;
        Ok(report)
    }

    /// Stops accepting, lets in-flight calls and writes finish, and flushes the store.
    pub async fn shutdown(self) -> Result<(), NodeError> {
        // Probes hear NOT_SERVING before the listeners stop accepting.
        set_health(&self.health, false).await;
        self.stop.cancel();
        self.tasks.close();
        // In-flight calls get a grace period; a client that never reads its stream (a stalled
        // Watch) must not hold the node up forever.
        if tokio::time::timeout(SHUTDOWN_GRACE, self.tasks.wait()).await.is_err() {
            tracing::warn!(grace = ?SHUTDOWN_GRACE, "some connections did not finish in time; stopping anyway");
        }
        self.context.store.persist().await?;
        // A clean stop leaves nothing in the write-ahead log to replay at the next start.
        self.context.store.checkpoint()?;
        tracing::info!(node = %self.context.code(), "node stopped");
        Ok(())
    }
}

/// Loads what a node shares (checking its own certificate, the signed directory against the
/// version last used, the TLS material and the signing key) and opens its store.
async fn open(config: NodeConfig, clock: Clock) -> Result<(NodeContext, Arc<tls::NodeTls>), NodeError> {
    check_own_certificate(&config)?;
    let public_keys = config.directory.public_keys().map_err(crate::trust::directory::DirectoryError::Key)?;
    let directory =
        crate::trust::directory::LiveDirectory::load(&config.directory.file, public_keys, &config.network)?;
    tracing::info!(version = directory.current().version, file = %config.directory.file.display(), "directory loaded");
    // Reloadable TLS material: CRLs, own certificates and keys (revocation and rotation).
    let node_tls = Arc::new(tls::NodeTls::load(&config.tls)?);
    let signer =
        crate::trust::signing::Signer::load(&config.tls.cert, &config.tls.key, &config.tls.network_ca)?;
    let store = Store::open_with(&config.data_dir, config.store.checkpoint_interval)?;
    store.set_notification_plan(config.code.as_str(), crate::store::notifications::plan(&config.notify));
    let (using, seen) = (directory.current().version, store.directory_version()?);
    if using < seen {
        let file = config.directory.file.display().to_string();
        return Err(NodeError::DirectoryRollback { file, using, seen });
    }
    record_directory_version(&store, using).await?;
    let clients = crate::trust::reload::LiveClients::new(&config);
    let context = NodeContext {
        config,
        clock,
        store,
        peers: Default::default(),
        metrics: Default::default(),
        signer: crate::trust::signing::LiveSigner::new(signer),
        directory,
        reload: crate::trust::reload::ReloadTrigger::new(),
        clients,
        tls_reloaded: tokio::sync::watch::Sender::new(0),
        wakers: Default::default(),
    };
    Ok((context, node_tls))
}

/// One delivery task per member of the directory in use: starts a task for each new member,
/// restarts a member's task when its entry changes (endpoint, fingerprint), and stops the task of
/// a removed member. Its queued messages stay queued (and visible) until it is listed again.
async fn supervise_deliveries(
    context: Arc<NodeContext>,
    client_tls: Arc<rustls::ClientConfig>,
    stop: CancellationToken,
    tasks: TaskTracker,
) {
    type Running = (crate::config::DirectoryEntry, CancellationToken, tokio::task::JoinHandle<()>);
    let mut running: HashMap<NodeCode, Running> = HashMap::new();
    let mut changes = context.directory.subscribe();
    let mut tls_reloads = context.tls_reloaded.subscribe();
    let mut reconnect_all = false;
    loop {
        changes.borrow_and_update();
        let listed = context.peers_listed();
        // After a TLS reload every task starts again on a fresh connection, checked against the
        // new CRLs (its calls in flight are abandoned: their messages stay queued and are resent,
        // and the receiver deduplicates them).
        let stale: Vec<NodeCode> = running
            .iter()
            .filter(|(code, (entry, _, _))| {
                reconnect_all || !listed.iter().any(|m| m.code == **code && m == entry)
            })
            .map(|(code, _)| *code)
            .collect();
        if reconnect_all && !stale.is_empty() {
            tracing::info!(peers = stale.len(), "TLS material reloaded: delivery reconnects to every peer");
        }
        reconnect_all = false;
        for code in stale {
            if let Some((_, task_stop, handle)) = running.remove(&code) {
                task_stop.cancel();
                // Wait for it, so that two tasks never send one peer's queue at the same time.
                let _ = handle.await;
                if !listed.iter().any(|m| m.code == code) {
                    tracing::warn!(peer = %code, "removed from the directory: delivery stopped, its queue stays");
                }
            }
        }
        for entry in listed {
            if running.contains_key(&entry.code) {
                continue;
            }
            let waker = context.waker(entry.code);
            match crate::peer::delivery::PeerDelivery::new(
                Arc::clone(&context),
                entry.clone(),
                Arc::clone(&client_tls),
                Arc::clone(&waker),
            ) {
                Ok(task) => {
                    let task_stop = stop.child_token();
                    let handle = tasks.spawn(task.run(task_stop.clone()));
                    tracing::info!(peer = %entry.code, endpoint = %entry.endpoint, "delivery started");
                    running.insert(entry.code, (entry, task_stop, handle));
                    // Whatever was queued for it while it was not listed goes now.
                    waker.queued(false);
                }
                Err(error) => tracing::error!(peer = %entry.code, %error, "cannot deliver to this member"),
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            changed = changes.changed() => if changed.is_err() { return },
            changed = tls_reloads.changed() => {
                if changed.is_err() {
                    return;
                }
                reconnect_all = true;
            }
        }
    }
}

/// Remembers, durably, that the node uses directory `version` (when it is newer than the one
/// recorded), so that a restart on an older signed file is refused.
async fn record_directory_version(store: &Store, version: u64) -> Result<(), StoreError> {
    if version <= store.directory_version()? {
        return Ok(());
    }
    store.write(|changes| {
        changes.record_directory_version(version);
        Ok::<_, StoreError>(())
    })?;
    store.persist().await
}

/// Reads the directory again whenever the reload trigger fires; a refused directory is an
/// ERROR line and the one in use stays.
async fn reload_directory(context: Arc<NodeContext>, stop: CancellationToken) {
    let mut fired = context.reload.subscribe();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            changed = fired.changed() => if changed.is_err() { return },
        }
        let in_use = context.directory.current().version;
        match context.directory.reload() {
            Ok(crate::trust::directory::Reloaded::Unchanged) => {
                tracing::info!(version = in_use, "directory unchanged");
            }
            Ok(crate::trust::directory::Reloaded::Updated { from, to }) => {
                tracing::info!(from, to, "directory updated");
                if let Err(error) = record_directory_version(&context.store, to).await {
                    tracing::error!(%error, version = to, "cannot record the directory version in the store");
                }
            }
            Err(error) => {
                tracing::error!(%error, version_in_use = in_use, "directory refused; keeping the one in use");
            }
        }
    }
}

/// Reads `[[clients]]` again whenever the reload trigger fires: an added client is let in by its
/// next call; the open desk and console connections of a removed client, or of one whose role
/// changed, are closed (a client that reconnects is authorised with its new role, or refused).
async fn reload_clients(context: Arc<NodeContext>, tls: Arc<tls::NodeTls>, stop: CancellationToken) {
    let mut fired = context.reload.subscribe();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            changed = fired.changed() => if changed.is_err() { return },
        }
        let reloading = Arc::clone(&context);
        let reloaded = tokio::task::spawn_blocking(move || reloading.clients.reload()).await;
        match reloaded {
            Ok(Ok(report)) => {
                let mut gone = report.removed.clone();
                gone.extend(report.changed.iter().cloned());
                let closed = tls.close_desk_clients(&gone);
                if !report.added.is_empty() || !gone.is_empty() {
                    tracing::info!(added = ?report.added, removed = ?report.removed, role_changed = ?report.changed, closed_connections = closed, "[[clients]] reloaded");
                }
                if report.restart_needed {
                    tracing::warn!(
                        "node.toml changed outside [[clients]]: those changes take effect at the next restart"
                    );
                }
            }
            Ok(Err(error)) => {
                tracing::error!(%error, "[[clients]] not reloaded; keeping the clients in use");
            }
            Err(join) => tracing::error!(error = %join, "[[clients]] reload failed"),
        }
    }
}

/// How often the store's state is looked at: it marks itself broken on a failed write and has
/// no other signal, so a probe may lag by this much.
const STORE_CHECK_INTERVAL: Duration = Duration::from_millis(250);

/// How often a broken store is reopened.
const STORE_RECOVERY_INTERVAL: Duration = Duration::from_secs(1);

/// How long a reopened store must stay healthy before it counts as writable again.
const STORE_SETTLE_TIME: Duration = Duration::from_secs(10);

/// Publishes whether the store takes writes, and reopens it after a write failure (disk full,
/// I/O error) once a second, so the node recovers by itself once writing works again.
///
/// Reopening succeeds even while the disk is still full (opening writes nothing), and a small
/// write may still fit where a request does not, so a reopened store counts as writable only
/// once a probe write (an empty change, one log frame) synced and no write failed for
/// [`STORE_SETTLE_TIME`]; otherwise health and `hanoi247_store_writable` would flap back after
/// every reopen while the node's real writes keep failing.
async fn keep_store_writable(
    store: crate::store::Store,
    writable: tokio::sync::watch::Sender<bool>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(STORE_CHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_attempt = tokio::time::Instant::now();
    // Since when the reopened store has taken writes (`None`: not since the last failure).
    let mut healthy_since: Option<tokio::time::Instant> = None;
    // Why the store stopped taking writes, until that is announced (`[notify]`).
    let mut broken_because: Option<String> = None;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if store.broken().is_none() {
            if !*writable.borrow() {
                match healthy_since {
                    None if probe_write(&store).await => healthy_since = Some(tokio::time::Instant::now()),
                    Some(since) if since.elapsed() >= STORE_SETTLE_TIME => {
                        writable.send_replace(true);
                        announce_writable_again(&store, broken_because.take()).await;
                    }
                    _ => {}
                }
            }
            continue;
        }
        healthy_since = None;
        if broken_because.is_none() {
            broken_because = store.broken();
        }
        writable.send_if_modified(|w| std::mem::replace(w, false));
        if last_attempt.elapsed() < STORE_RECOVERY_INTERVAL {
            continue;
        }
        last_attempt = tokio::time::Instant::now();
        let reopening = store.clone();
        let reopened = tokio::task::spawn_blocking(move || reopening.recover()).await.unwrap_or(false);
        if reopened && probe_write(&store).await {
            healthy_since = Some(tokio::time::Instant::now());
        }
    }
}

/// Tells the `[notify]` targets that want it that the store could not write for a while: only
/// once it writes again, since a notification cannot be stored before.
async fn announce_writable_again(store: &crate::store::Store, why: Option<String>) {
    let why = why.unwrap_or_else(|| "a write failed".into());
    let notice = crate::store::notifications::Notice {
        detail: format!("the store could not write ({why}); it was reopened and writes again"),
        ..Default::default()
    };
    if let Err(error) = store.notify(crate::config::NotifyEvent::StoreUnwritable, &notice).await {
        tracing::error!(%error, "cannot store the store-unwritable notification");
    }
}

/// Writes an empty change (one log frame, no data) and syncs it: whether the store takes writes.
async fn probe_write(store: &crate::store::Store) -> bool {
    store.write(|_| Ok::<_, StoreError>(())).is_ok() && store.persist().await.is_ok()
}

/// Keeps `grpc.health.v1.Health` truthful: NOT_SERVING (the whole server, `""`, and both
/// services) while the store cannot write, SERVING again once it takes writes, NOT_SERVING for
/// good once the node stops.
async fn report_health(
    mut writable: tokio::sync::watch::Receiver<bool>,
    health: tonic_health::server::HealthReporter,
    stop: CancellationToken,
) {
    let mut serving = true;
    loop {
        let now = *writable.borrow_and_update();
        if now != serving {
            serving = now;
            set_health(&health, serving).await;
        }
        tokio::select! {
            () = stop.cancelled() => break,
            changed = writable.changed() => if changed.is_err() { break },
        }
    }
    set_health(&health, false).await;
}

/// Sets the whole server's and both services' health status.
async fn set_health(health: &tonic_health::server::HealthReporter, serving: bool) {
    use tonic_health::ServingStatus;
    let status = if serving { ServingStatus::Serving } else { ServingStatus::NotServing };
    health.set_service_status("", status).await;
    health
        .set_service_status(
            <PeerServiceServer<crate::rpc::peer_service::PeerApi> as tonic::server::NamedService>::NAME,
            status,
        )
        .await;
    health
        .set_service_status(
            <DeskServiceServer<crate::rpc::desk_service::DeskApi> as tonic::server::NamedService>::NAME,
            status,
        )
        .await;
}

/// Reloads off the async workers: reading and checking files and CRLs is blocking work.
async fn reload_tls_now(tls: &Arc<tls::NodeTls>, why: &'static str) -> bool {
    let tls = Arc::clone(tls);
    let reloaded = tokio::task::spawn_blocking(move || tls.reload()).await;
    match reloaded.unwrap_or_else(|join| Err(TlsError::Reload(join.to_string()))) {
        Ok(report) => {
            tracing::info!(
                trigger = why,
                closed_peer_connections = report.closed_peer_connections,
                closed_desk_connections = report.closed_desk_connections,
                "TLS material reloaded (CRLs, certificates, keys)"
            );
            true
        }
        Err(error) => {
            tracing::error!(trigger = why, %error, "TLS reload failed; keeping the previous certificates and CRLs");
            false
        }
    }
}

/// The signing key follows the node certificate and key (the same files), only after the TLS
/// material took them, so that signatures always match the certificate peers see.
async fn reload_signer(context: &Arc<NodeContext>) {
    let context = Arc::clone(context);
    let reloaded = tokio::task::spawn_blocking(move || context.signer.reload(&context.config.tls)).await;
    match reloaded {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            tracing::error!(%error, "signing key not reloaded; envelopes are signed with the previous one")
        }
        Err(join) => tracing::error!(error = %join, "signing key reload failed"),
    }
}

/// Reloads the TLS material (CRLs, certificates, keys) whenever the node's reload trigger fires:
/// SIGHUP, or a settled change of a watched file (the `[tls]` files are watched).
async fn reload_tls_on_trigger(tls: Arc<tls::NodeTls>, context: Arc<NodeContext>, stop: CancellationToken) {
    let mut fired = context.reload.subscribe();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            changed = fired.changed() => if changed.is_err() { return },
        }
        if reload_tls_now(&tls, "reload trigger").await {
            reload_signer(&context).await;
            context.tls_reloaded.send_modify(|n| *n += 1);
        }
    }
}

/// A gRPC server with the `[limits]` of every connection: concurrent streams (HTTP/2's own
/// cap, and calls handled at once) and the time a call may take to answer. tonic's timeout
/// covers the handler until it returns its response, not the body of a streaming response,
/// so `Watch`, `Backup` and `ListAudit` streams run on past it.
fn bounded_server(limits: &crate::config::Limits) -> Server {
    Server::builder()
        .max_concurrent_streams(limits.max_streams_per_connection)
        .concurrency_limit_per_connection(limits.max_streams_per_connection as usize)
        .timeout(limits.request_timeout)
}

/// The caps of listener `name` from `[limits]`, its refusals counted in the node's metrics.
fn admission(context: &Arc<NodeContext>, name: &'static str, per_address: bool) -> Arc<Admission> {
    let counted = Arc::clone(context);
    let counter: RefusalCounter = Arc::new(move |listener, why: Refusal| {
        let labels = crate::runtime::metrics::labels(&[("listener", listener), ("reason", why.label())]);
        counted.metrics.connections_refused.get_or_create(&labels).inc();
    });
    Admission::new(name, &context.config.limits, per_address, counter)
}

/// The desk listener's decode limit: one `Submit` carries one envelope, so a request far over
/// `limits.max_envelope_bytes` is refused (RESOURCE_EXHAUSTED) before it is read into memory.
fn desk_decode_limit(limits: &crate::config::Limits) -> usize {
    limits.max_envelope_bytes + MESSAGE_SLACK
}

async fn bind(address: SocketAddr) -> Result<TcpListener, NodeError> {
    TcpListener::bind(address).await.map_err(|source| NodeError::Listen { address, source })
}

/// Runs one gRPC server until shutdown; a server that fails stops the whole node, since a node
/// that cannot receive must not look healthy.
async fn serve(
    name: &'static str,
    address: SocketAddr,
    stop: CancellationToken,
    server: impl Future<Output = Result<(), tonic::transport::Error>>,
) {
    if let Err(error) = server.await {
        tracing::error!(listener = name, %address, %error, "listener failed; stopping the node");
        stop.cancel();
    }
}

/// Refuses to start with a certificate that names another node or network: the peers would
/// refuse everything it sends.
fn check_own_certificate(config: &NodeConfig) -> Result<(), NodeError> {
    let path = config.tls.cert.display().to_string();
    let certs = tls::load_certs(&config.tls.cert)?;
    // load_certs refuses an empty file, so the first certificate exists.
    let leaf = certs.first().map(|c| c.as_ref()).unwrap_or_default();
    let identity = crate::domain::identity::identity_of_cert(leaf)
        .map_err(|e| NodeError::Identity { path: path.clone(), message: e.to_string() })?;
    let expected =
        crate::domain::identity::Identity::Node { network: config.network.clone(), code: config.code };
    if identity != expected {
        return Err(NodeError::Identity {
            path,
            message: format!("names {identity}, but this node is {expected}"),
        });
    }
    Ok(())
}

/// A node's shared state for unit tests: loaded as `start` loads it, with a clock the test
/// moves, and no listener or task running.
#[cfg(test)]
pub mod testing {
    use std::sync::Arc;
    use std::time::SystemTime;

    use crate::cli::init::{InitOptions, init_network};
    use crate::config::NodeConfig;
    use crate::domain::clock::Clock;
    use crate::proto::{Direction, Envelope, EnvelopeKind, Message, MessageState, Precedence};
    use crate::runtime::context::NodeContext;
    use crate::store_proto::StoredMessage;

    /// Node VN of a two-node network (VN, FR) made by `init` in the returned temp dir.
    pub(crate) async fn context(clock: Clock) -> (tempfile::TempDir, Arc<NodeContext>) {
        let dir = tempfile::tempdir().unwrap();
        let codes = ["VN".parse().unwrap(), "FR".parse().unwrap()];
        let options =
            InitOptions::with_base_port(dir.path().join("net"), "net".into(), &codes, 30000).unwrap();
        let report = init_network(&options).unwrap();
        let config = NodeConfig::load(report.node_config(codes[0]).unwrap()).unwrap();
        let (context, _) = super::open(config, clock).await.unwrap();
        (dir, Arc::new(context))
    }

    /// Stores a FLASH request created at `created`, in `state` (RECEIVED: from FR; QUEUED: to
    /// FR), with its acknowledgement deadline and `expires_at`; returns its id.
    pub(crate) fn store_request(
        context: &NodeContext,
        state: MessageState,
        created: SystemTime,
        expires_at: SystemTime,
    ) -> uuid::Uuid {
        let id = uuid::Uuid::now_v7();
        let inbound = state == MessageState::Received;
        let (origin, destination) = if inbound { ("FR", "VN") } else { ("VN", "FR") };
        let envelope = Envelope {
            id: id.to_string(),
            origin: origin.into(),
            destination: destination.into(),
            kind: EnvelopeKind::Request as i32,
            precedence: Precedence::Flash as i32,
            created_at: Some(crate::domain::timestamp::from_system(created)),
            expires_at: Some(crate::domain::timestamp::from_system(expires_at)),
            ..Default::default()
        };
        let direction = if inbound { Direction::Inbound } else { Direction::Outbound };
        let mut message = Message {
            ack_deadline: context.config.deadlines.ack_deadline(&envelope),
            envelope: Some(envelope),
            direction: direction as i32,
            ..Default::default()
        };
        let at = crate::domain::timestamp::from_system(created);
        crate::domain::lifecycle::enter(&mut message, state, at, "test".into());
        context
            .store
            .write(|changes| {
                let seq = changes.next_seq()?;
                changes.put(StoredMessage { message: Some(message), seq, ..Default::default() })
            })
            .unwrap();
        id
    }
}
