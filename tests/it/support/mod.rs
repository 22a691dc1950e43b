//! A test network: certificates from our own `init`, real sled stores in a temp dir, real mTLS
//! listeners on 127.0.0.1 with ports from the OS; nodes in-process or as child processes.

#![allow(dead_code)]

pub mod proxy;
pub mod python;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hanoi247::cli::desk_client::{self, DeskClient, wait_for_state};
use hanoi247::cli::init::{InitOptions, InitReport, NodePlan, init_network};
use hanoi247::config::{ClientConfig, NodeConfig};
use hanoi247::domain::identity::{Identity, NodeCode};
use hanoi247::node::RunningNode;
use hanoi247::proto::peer_service_client::PeerServiceClient;
use hanoi247::proto::{
    HandlingCode, ListInboxRequest, ListOutboxRequest, Message, MessageState, Precedence,
    PreservationRequest, RequestType, SubmitRequest,
};
use hanoi247::trust::directory::{Directory, SecretariatKey};
use hanoi247::trust::tls::{self, Dial};
use tokio::net::TcpListener;

/// Every wait in the tests ends by this deadline.
pub const DEADLINE: Duration = Duration::from_secs(30);

pub fn code(text: &str) -> NodeCode {
    text.parse().unwrap()
}

/// A network made by `init` in a temp dir.
pub struct Network {
    pub dir: tempfile::TempDir,
    pub report: InitReport,
    pub plans: Vec<NodePlan>,
    pub network: String,
    running: HashMap<NodeCode, RunningNode>,
}

impl Network {
    /// Certificates and configs for `codes`, retries shortened so tests are quick.
    pub async fn new(codes: &[&str]) -> Self {
        Self::named(codes, "hanoi247-test").await
    }

    pub async fn named(codes: &[&str], network: &str) -> Self {
        Self::build(codes, network, Vec::new()).await
    }

    /// A network whose desk clients are `clients` as (node, name, role); nodes without any get
    /// `officer` and `operator`.
    pub async fn with_clients(
        codes: &[&str],
        clients: &[(&str, &str, hanoi247::domain::access::Role)],
    ) -> Self {
        let clients =
            clients.iter().map(|(node, name, role)| (code(node), (*name).to_owned(), *role)).collect();
        Self::build(codes, "hanoi247-test", clients).await
    }

    async fn build(
        codes: &[&str],
        network: &str,
        clients: Vec<(NodeCode, String, hanoi247::domain::access::Role)>,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut plans = Vec::new();
        for text in codes {
            plans.push(NodePlan {
                code: code(text),
                peer_port: free_port().await,
                desk_port: free_port().await,
                metrics_port: free_port().await,
                console_port: free_port().await,
            });
        }
        let options = InitOptions {
            out: dir.path().join("net"),
            network: network.into(),
            nodes: plans.clone(),
            clients,
        };
        let report = init_network(&options).unwrap();
        for (_, path) in &report.node_configs {
            let text = std::fs::read_to_string(path)
                .unwrap()
                .replace("retry_initial = \"1s\"", "retry_initial = \"100ms\"")
                .replace("retry_max = \"60s\"", "retry_max = \"500ms\"");
            std::fs::write(path, text).unwrap();
        }
        Self { dir, report, plans, network: network.into(), running: HashMap::new() }
    }

    pub fn config_path(&self, node: &str) -> PathBuf {
        self.report.node_config(code(node)).unwrap().to_owned()
    }

    pub fn config(&self, node: &str) -> NodeConfig {
        NodeConfig::load(&self.config_path(node)).unwrap()
    }

    pub fn client_config_path(&self, node: &str) -> PathBuf {
        self.report.client_config(code(node)).unwrap().to_owned()
    }

    /// Starts `node` in this process on its planned ports.
    pub async fn start(&mut self, node: &str) {
        let config = self.config(node);
        let peer = TcpListener::bind(config.listen.peer).await.unwrap();
        let desk = TcpListener::bind(config.listen.desk).await.unwrap();
        let running = RunningNode::start_on(config, peer, desk).await.unwrap();
        self.running.insert(code(node), running);
    }

    /// Stops an in-process node gracefully.
    pub async fn stop(&mut self, node: &str) {
        let running = self.running.remove(&code(node)).expect("node is running");
        running.shutdown().await.unwrap();
    }

    /// Runs `node` as a child process of the real binary and waits until its desk answers.
    pub async fn spawn(&self, node: &str) -> ChildNode {
        self.spawn_with_env(node, &[]).await
    }

    /// [`Network::spawn`] with extra environment variables (e.g. a crash point).
    pub async fn spawn_with_env(&self, node: &str, env: &[(&str, &str)]) -> ChildNode {
        let log = std::fs::File::create(self.dir.path().join(format!("{node}.log"))).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_hanoi247"))
            .args(["node", "--config"])
            .arg(self.config_path(node))
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut child = ChildNode { child };
        self.wait_ready(node, &mut child).await;
        child
    }

    /// The config file of `node`'s client `name` (`officer` and `operator` exist by default).
    pub fn client_config_path_of(&self, node: &str, name: &str) -> PathBuf {
        self.report.client_config_named(code(node), name).unwrap().to_owned()
    }

    /// A desk client of `node` with the client `name`.
    pub fn desk_as(&self, node: &str, name: &str) -> DeskClient {
        desk_client::connect(&ClientConfig::load(&self.client_config_path_of(node, name)).unwrap()).unwrap()
    }

    /// A desk client of `node` (its default `officer`).
    pub fn desk(&self, node: &str) -> DeskClient {
        desk_client::connect(&ClientConfig::load(&self.client_config_path(node)).unwrap()).unwrap()
    }

    /// A peer-service client that presents `as_node`'s certificate to `to_node`.
    pub fn peer_client(&self, as_node: &str, to_node: &str) -> PeerServiceClient<tonic::transport::Channel> {
        PeerServiceClient::new(self.peer_channel(as_node, to_node))
    }

    /// A channel to `to_node`'s peer listener presenting `as_node`'s certificate.
    pub fn peer_channel(&self, as_node: &str, to_node: &str) -> tonic::transport::Channel {
        let me = self.config(as_node);
        let target = self.config(to_node);
        let tls = tls::client_config(&me.tls.network_ca, &me.tls.cert, &me.tls.key).unwrap();
        let dial = Dial {
            endpoint: format!("127.0.0.1:{}", target.listen.peer.port()),
            expect: Some(Identity::Node { network: self.network.clone(), code: code(to_node) }),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Some(Duration::from_secs(10)),
            observe: None,
        };
        tls::channel(dial, tls).unwrap()
    }

    /// Changes a node's config file: replaces `from` (which must be there) with `to`.
    pub fn edit_config(&self, node: &str, from: &str, to: &str) {
        let path = self.config_path(node);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{from} not in {}", path.display());
        std::fs::write(&path, text.replace(from, to)).unwrap();
    }

    /// What a child-process node (`spawn`) has logged so far.
    pub fn log_of(&self, node: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{node}.log"))).unwrap_or_default()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The secretariat's key `init` made.
    pub fn secretariat_key(&self) -> SecretariatKey {
        SecretariatKey::load(&self.dir.path().join("net/secretariat.key")).unwrap()
    }

    /// The signed directory every node uses unless given its own.
    pub fn shared_directory_path(&self) -> PathBuf {
        self.dir.path().join("net/directory.toml")
    }

    /// Changes the shared directory and signs it (a new version), atomically; returns the version.
    pub fn edit_shared_directory(&self, change: impl FnOnce(&mut Directory)) -> u64 {
        sign_with(&self.shared_directory_path(), &self.secretariat_key(), change)
    }

    /// Gives `node` its own copy of the directory (from then on), changes it and signs it (a
    /// new version); returns the version. For tests that route one node's view of a peer (a
    /// proxy) or remove a member for one node only.
    pub fn edit_directory(&self, node: &str, change: impl FnOnce(&mut Directory)) -> u64 {
        let own = self.config_path(node).parent().unwrap().join("directory.toml");
        if !own.exists() {
            std::fs::copy(self.shared_directory_path(), &own).unwrap();
            self.edit_config(node, "file = \"../directory.toml\"", "file = \"directory.toml\"");
        }
        sign_with(&own, &self.secretariat_key(), change)
    }

    /// `node` reaches `peer` at `endpoint` (a proxy), in its own signed directory.
    pub fn route_peer(&self, node: &str, peer: &str, endpoint: &str) {
        self.edit_directory(node, |directory| {
            let member = directory.members.iter_mut().find(|m| m.code == code(peer)).unwrap();
            member.endpoint = endpoint.to_owned();
        });
    }
}

/// Reads a directory, changes it, signs it with `key` and writes it back atomically.
pub fn sign_with(path: &Path, key: &SecretariatKey, change: impl FnOnce(&mut Directory)) -> u64 {
    let mut directory = Directory::read(path).unwrap();
    change(&mut directory);
    directory.sign(key);
    directory.write(path).unwrap();
    directory.version
}

impl Drop for Network {
    fn drop(&mut self) {
        // In-process nodes stop with the test's runtime; nothing to flush for a temp dir.
        self.running.clear();
    }
}

/// A node running as a child process; killed when dropped.
pub struct ChildNode {
    pub child: Child,
}

impl ChildNode {
    /// SIGHUP: the node reloads its directory and TLS material.
    pub fn hangup(&self) {
        let status = Command::new("kill").args(["-HUP", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
    }

    /// SIGKILL: no chance to flush or say goodbye.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then the exit status (within the deadline).
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(status.success());
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(tokio::time::Instant::now() < deadline, "node did not stop on SIGTERM");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for ChildNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Ports handed to nodes come from below the kernel's ephemeral range (32768 and up), so no
/// outgoing connection and no `bind(0)` elsewhere can take one between planning and binding.
const PLANNED_PORTS: std::ops::Range<u32> = 20_000..32_000;

/// Polls `check` until it is true or [`DEADLINE`] passes (then fails naming `what`).
pub async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "not within {DEADLINE:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A port nobody listens on right now, planned for a node: never the same twice in this test
/// process (a node restarts on its planned ports, so a port given back to the OS could be taken
/// by another test's node meanwhile). The start is random so that concurrent test processes
/// rarely meet.
pub async fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let span = PLANNED_PORTS.end - PLANNED_PORTS.start;
    let _ = NEXT.compare_exchange(0, 1 + fastrand::u32(..span), Ordering::SeqCst, Ordering::SeqCst);
    loop {
        let offset = NEXT.fetch_add(1, Ordering::SeqCst) % span;
        let port = (PLANNED_PORTS.start + offset) as u16;
        if TcpListener::bind(("127.0.0.1", port)).await.is_ok() {
            return port;
        }
    }
}

/// A complete FLASH preservation request to `destination`.
pub fn preservation_request(destination: &str) -> SubmitRequest {
    SubmitRequest {
        destination: destination.into(),
        request_type: RequestType::Preservation as i32,
        precedence: Precedence::Flash as i32,
        subject: "Preserve mailbox".into(),
        body: "Deletion announced".into(),
        handling_code: HandlingCode::H0 as i32,
        preservation: Some(PreservationRequest {
            requesting_authority: "A05".into(),
            offence: "fraud".into(),
            facts: "phishing campaign".into(),
            data_to_preserve: "mailbox and IP logs".into(),
            link_to_offence: "sent the phishing mails".into(),
            custodian_or_location: "provider X".into(),
            necessity: "deleted in 24h".into(),
            mutual_legal_assistance_to_follow: true,
            preservation_days: 90,
        }),
        ..Default::default()
    }
}

/// A simple request of the given precedence.
pub fn advice_request(destination: &str, precedence: Precedence, subject: &str) -> SubmitRequest {
    SubmitRequest {
        destination: destination.into(),
        request_type: RequestType::TechnicalAdvice as i32,
        precedence: precedence as i32,
        subject: subject.into(),
        ..Default::default()
    }
}

/// Submits and returns the new message's id.
pub async fn submit(desk: &mut DeskClient, request: SubmitRequest) -> String {
    let message = desk.submit(request).await.unwrap().into_inner().message.unwrap();
    assert_eq!(message.state(), MessageState::Queued);
    message.envelope.unwrap().id
}

pub async fn wait_state(desk: &mut DeskClient, id: &str, state: MessageState) -> Message {
    wait_for_state(desk, id, state, DEADLINE).await.unwrap()
}

pub async fn inbox(desk: &mut DeskClient) -> Vec<Message> {
    desk.list_inbox(ListInboxRequest { limit: 1000, ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .messages
}

pub async fn outbox(desk: &mut DeskClient) -> Vec<Message> {
    desk.list_outbox(ListOutboxRequest { limit: 1000, ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .messages
}

pub fn ids(messages: &[Message]) -> Vec<String> {
    messages.iter().map(|m| m.envelope.as_ref().unwrap().id.clone()).collect()
}

pub fn states(message: &Message) -> Vec<MessageState> {
    message.timeline.iter().map(|t| t.state()).collect()
}

impl Network {
    /// Runs `node` as a child process whose files may not grow past `max_file_kib` (a soft
    /// RLIMIT_FSIZE; SIGXFSZ ignored so writes fail with EFBIG instead of killing it): a disk
    /// that fills up, without root. [`ChildNode::lift_file_limit`] empties the "disk" again.
    pub async fn spawn_with_file_limit(&self, node: &str, max_file_kib: u64) -> ChildNode {
        let log = std::fs::File::create(self.dir.path().join(format!("{node}.log"))).unwrap();
        let script = format!("trap '' XFSZ; ulimit -S -f {max_file_kib}; exec \"$0\" node --config \"$1\"");
        let child = Command::new("bash")
            .args(["-c", &script, env!("CARGO_BIN_EXE_hanoi247")])
            .arg(self.config_path(node))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut child = ChildNode { child };
        self.wait_ready(node, &mut child).await;
        child
    }

    async fn wait_ready(&self, node: &str, child: &mut ChildNode) {
        let mut desk = self.desk(node);
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            if desk.list_inbox(ListInboxRequest { limit: 1, ..Default::default() }).await.is_ok() {
                return;
            }
            if let Some(status) = child.child.try_wait().unwrap() {
                panic!("{node} exited with {status} before it was ready");
            }
            assert!(tokio::time::Instant::now() < deadline, "{node} not ready within {DEADLINE:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl ChildNode {
    /// Lifts the file size limit set by [`Network::spawn_with_file_limit`].
    pub fn lift_file_limit(&self) {
        let status = Command::new("prlimit")
            .args(["--pid", &self.child.id().to_string(), "--fsize=unlimited"])
            .status()
            .unwrap();
        assert!(status.success(), "prlimit failed");
    }
}

/// The alert a node answers a bare TLS client with `config` on `port`: during the handshake
/// (no common protocol version) or on the first read after it (a client certificate refused).
pub async fn handshake_alert(config: std::sync::Arc<rustls::ClientConfig>, port: u16) -> String {
    use tokio::io::AsyncReadExt;
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut stream = match tokio_rustls::TlsConnector::from(config).connect(name, tcp).await {
        Ok(stream) => stream,
        Err(error) => return error.to_string(),
    };
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(DEADLINE, stream.read(&mut buf)).await.expect("the node answers");
    read.expect_err("the node refuses the handshake").to_string()
}

/// A desk client of the node `client` points at, over a hand-made TLS configuration (a missing,
/// foreign, expired or TLS 1.2 client certificate).
pub fn desk_with_tls(
    client: &ClientConfig,
    mut config: rustls::ClientConfig,
) -> hanoi247::proto::desk_service_client::DeskServiceClient<tonic::transport::Channel> {
    config.alpn_protocols = vec![b"h2".to_vec()];
    let dial = Dial {
        endpoint: client.endpoint.clone(),
        expect: None,
        connect_timeout: Duration::from_secs(5),
        request_timeout: Some(Duration::from_secs(10)),
        observe: None,
    };
    hanoi247::proto::desk_service_client::DeskServiceClient::new(
        tls::channel(dial, std::sync::Arc::new(config)).unwrap(),
    )
}

impl Network {
    /// Starts `node` in this process with `clock` as its "now" for deadlines, expiry and
    /// retention (a manual clock the test moves instead of waiting).
    pub async fn start_with_clock(&mut self, node: &str, clock: hanoi247::domain::clock::Clock) {
        let config = self.config(node);
        let peer = TcpListener::bind(config.listen.peer).await.unwrap();
        let desk = TcpListener::bind(config.listen.desk).await.unwrap();
        let running = RunningNode::start_with_clock(config, peer, desk, clock).await.unwrap();
        self.running.insert(code(node), running);
    }
}

/// Submits to `node` from `writers` concurrent desk clients (requests to FR with `body_bytes` of
/// body) until at least `before_kill` are confirmed, then SIGKILLs the node with submissions in
/// flight. Returns the ids of every confirmed submission.
pub async fn burst_then_kill9(
    net: &Network,
    node: &str,
    process: ChildNode,
    writers: usize,
    body_bytes: usize,
    before_kill: usize,
) -> Vec<String> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let confirmed = Arc::new(tokio::sync::Mutex::new(Vec::new()));
    let killing = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for writer in 0..writers {
        let (mut desk, confirmed, killing) = (net.desk(node), Arc::clone(&confirmed), Arc::clone(&killing));
        tasks.push(tokio::spawn(async move {
            for i in 0..1000 {
                if killing.load(Ordering::SeqCst) {
                    return;
                }
                let mut request = advice_request("FR", Precedence::Routine, &format!("burst {writer}/{i}"));
                request.body = "x".repeat(body_bytes);
                match desk.submit(request).await {
                    Ok(response) => confirmed
                        .lock()
                        .await
                        .push(response.into_inner().message.unwrap().envelope.unwrap().id),
                    // The node is being killed: this one was never confirmed.
                    Err(_) => return,
                }
            }
        }));
    }
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while confirmed.lock().await.len() < before_kill {
        assert!(tokio::time::Instant::now() < deadline, "the burst is too slow");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    killing.store(true, Ordering::SeqCst);
    process.kill9();
    for task in tasks {
        task.await.unwrap();
    }
    confirmed.lock().await.clone()
}

/// A valid request envelope from `origin` to `destination`, signed as `origin` would sign it.
pub fn signed_request(
    net: &Network,
    origin: &str,
    destination: &str,
    change: impl FnOnce(&mut hanoi247::proto::Envelope),
) -> hanoi247::proto::Envelope {
    let mut envelope = hanoi247::proto::Envelope {
        id: uuid::Uuid::now_v7().to_string(),
        origin: origin.into(),
        destination: destination.into(),
        kind: hanoi247::proto::EnvelopeKind::Request as i32,
        request_type: hanoi247::proto::RequestType::TechnicalAdvice as i32,
        precedence: hanoi247::proto::Precedence::Routine as i32,
        case_reference: format!("{origin}-2026-00000001"),
        subject: "advice".into(),
        language: "en".into(),
        created_at: Some(hanoi247::domain::timestamp::now()),
        expires_at: Some(hanoi247::domain::timestamp::after(std::time::Duration::from_secs(3600))),
        handling_code: hanoi247::proto::HandlingCode::H0 as i32,
        ..Default::default()
    };
    change(&mut envelope);
    let config = net.config(origin);
    let signer =
        hanoi247::trust::signing::Signer::load(&config.tls.cert, &config.tls.key, &config.tls.network_ca)
            .unwrap();
    signer.sign_envelope(&mut envelope).unwrap();
    envelope
}
