//! A fault-injecting TCP proxy for the tests: listens on 127.0.0.1 (port from the OS) and forwards
//! every connection to a target, unless told to misbehave. The fault can be changed at any time;
//! new connections get the new fault and live ones follow it where that makes sense:
//!
//! - to `BlackHole`: a live connection goes silent (nothing forwarded either way, nothing
//!   closed), which is what a hung peer looks like; only deadlines and keepalives notice it;
//! - to `Delay`: a live connection is slowed from its next chunk on;
//! - to anything else, and away from `BlackHole`: a live connection is cut, so the new fault
//!   takes effect at the client's next connection (and a silenced stream, which has lost bytes,
//!   never resumes).
//!
//! Faults for the chaos tests are drawn from a seeded [`fastrand::Rng`]: see [`chaos_seed`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long the proxy waits for its target to accept a connection.
const TARGET_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The environment variable that fixes the chaos seed (to replay a failed run).
pub const SEED_VARIABLE: &str = "HANOI247_CHAOS_SEED";

/// Which way bytes travel through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// From the connecting client to the target: requests.
    ClientToServer,
    /// From the target back to the client: responses.
    ServerToClient,
}

/// What the proxy does with connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Forward both ways.
    Pass,
    /// Accept, then close at once without a word to the target.
    Refuse,
    /// Forward, but drop the whole connection once `bytes` have passed in `direction`
    /// (client to server: mid-request; server to client: mid-response). Counted per connection.
    CutAfter { bytes: usize, direction: Flow },
    /// Forward, holding every chunk this long first (both ways).
    Delay(Duration),
    /// Accept and read, never answer, never close (until the fault changes).
    BlackHole,
}

impl Fault {
    /// A fault drawn from `rng` (never `Pass`): refusals, cuts mid-request and mid-response
    /// (anywhere from the TLS handshake to well into a batch), delays and black holes.
    pub fn random(rng: &mut fastrand::Rng) -> Fault {
        match rng.u8(0..5) {
            0 => Fault::Refuse,
            1 => Fault::CutAfter { bytes: rng.usize(1..40_000), direction: Flow::ClientToServer },
            2 => Fault::CutAfter { bytes: rng.usize(1..8_000), direction: Flow::ServerToClient },
            3 => Fault::Delay(Duration::from_millis(rng.u64(5..300))),
            _ => Fault::BlackHole,
        }
    }
}

/// The seed of a chaos run: `HANOI247_CHAOS_SEED` when set, else a fresh random one. Printed on
/// stderr, so that a failed run can be replayed with the same faults.
pub fn chaos_seed(test: &str) -> u64 {
    let seed = match std::env::var(SEED_VARIABLE) {
        Ok(text) => text.trim().parse().unwrap_or_else(|_| panic!("{SEED_VARIABLE}={text} is not a u64")),
        Err(_) => fastrand::u64(..),
    };
    eprintln!("{test}: chaos seed {seed} (replay with {SEED_VARIABLE}={seed})");
    seed
}

/// What a proxy has done so far.
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Connections closed at once (`Refuse`), or whose target could not be reached.
    pub refused: AtomicU64,
    /// Connections swallowed by a black hole.
    pub black_holed: AtomicU64,
    /// Connections cut after their byte budget (`CutAfter`).
    pub cut_after_bytes: AtomicU64,
    /// Live connections cut because the fault changed.
    pub cut_by_change: AtomicU64,
    /// Live connections silenced because the fault became `BlackHole`.
    pub silenced: AtomicU64,
    /// Fault changes.
    pub changes: AtomicU64,
    /// Bytes forwarded client to server and server to client.
    pub bytes_up: AtomicU64,
    pub bytes_down: AtomicU64,
}

impl ProxyStats {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// One line for test output.
    pub fn summary(&self) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "{} connections, {} refused, {} black-holed, {} silenced, {} cut after bytes, \
             {} cut by a fault change, {} changes, {} bytes up, {} bytes down",
            get(&self.accepted),
            get(&self.refused),
            get(&self.black_holed),
            get(&self.silenced),
            get(&self.cut_after_bytes),
            get(&self.cut_by_change),
            get(&self.changes),
            get(&self.bytes_up),
            get(&self.bytes_down),
        )
    }
}

/// The fault in force and how many times it changed.
#[derive(Debug, Clone)]
struct Control {
    generation: u64,
    fault: Fault,
}

/// A running proxy; stops (and cuts its connections) when dropped.
pub struct Proxy {
    addr: SocketAddr,
    target: SocketAddr,
    control: watch::Sender<Control>,
    stats: Arc<ProxyStats>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// A proxy to `target`, passing everything.
    pub async fn start(target: SocketAddr) -> Proxy {
        Self::with_fault(target, Fault::Pass).await
    }

    /// A proxy to `target` with `fault` in force from the start.
    pub async fn with_fault(target: SocketAddr, fault: Fault) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (control, _) = watch::channel(Control { generation: 0, fault });
        let stats = Arc::new(ProxyStats::default());
        let accept = tokio::spawn(accept_loop(listener, target, control.clone(), Arc::clone(&stats)));
        Proxy { addr, target, control, stats, accept }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Where the proxy forwards to.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// The fault in force.
    pub fn fault(&self) -> Fault {
        self.control.borrow().fault.clone()
    }

    /// Puts `fault` in force: new connections get it; live ones go silent (`BlackHole`), slow
    /// down (`Delay`) or are cut (anything else, also when the fault stays the same, and always
    /// when they were silenced), as the module documentation says.
    pub fn set(&self, fault: Fault) {
        ProxyStats::bump(&self.stats.changes);
        self.control.send_modify(|control| {
            control.generation += 1;
            control.fault = fault;
        });
    }

    pub fn stats(&self) -> &ProxyStats {
        &self.stats
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Live connections end when the control channel closes with this sender.
        self.accept.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    control: watch::Sender<Control>,
    stats: Arc<ProxyStats>,
) {
    loop {
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(_) => {
                // Out of descriptors and the like: do not spin.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        ProxyStats::bump(&stats.accepted);
        tokio::spawn(connection(client, target, control.subscribe(), Arc::clone(&stats)));
    }
}

/// How one direction of a connection ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The sender closed its side; the close was passed on.
    Eof,
    /// The byte budget ran out: cut the connection.
    Cut,
    /// The fault changed to one that cuts live connections.
    Changed,
    /// Reading or writing failed: the connection is gone.
    Broken,
}

/// What a live connection does now: the fault it started with until the proxy's fault changes,
/// then `BlackHole` or `Delay` if the change is to one of those, or `None`: cut it.
struct Live {
    control: watch::Receiver<Control>,
    started: Control,
    /// Once silenced, a connection never speaks again (it has lost bytes).
    silenced: AtomicBool,
}

impl Live {
    fn fault(&self) -> Option<Fault> {
        let now = self.control.borrow().clone();
        if now.generation == self.started.generation {
            return Some(self.started.fault.clone());
        }
        match now.fault {
            Fault::BlackHole => {
                self.silenced.store(true, Ordering::SeqCst);
                Some(Fault::BlackHole)
            }
            Fault::Delay(delay) if !self.silenced.load(Ordering::SeqCst) => Some(Fault::Delay(delay)),
            _ => None,
        }
    }
}

async fn connection(
    client: TcpStream,
    target: SocketAddr,
    mut control: watch::Receiver<Control>,
    stats: Arc<ProxyStats>,
) {
    let started = control.borrow_and_update().clone();
    match started.fault {
        Fault::Refuse => {
            ProxyStats::bump(&stats.refused);
            drop(client);
        }
        Fault::BlackHole => {
            ProxyStats::bump(&stats.black_holed);
            tokio::select! {
                // Any change ends a black-holed connection (the proxy going away too).
                _ = control.changed() => ProxyStats::bump(&stats.cut_by_change),
                () = swallow(client) => {}
            }
        }
        Fault::Pass | Fault::CutAfter { .. } | Fault::Delay(_) => {
            let connect = tokio::time::timeout(TARGET_CONNECT_TIMEOUT, TcpStream::connect(target));
            let server = tokio::select! {
                _ = control.changed() => {
                    ProxyStats::bump(&stats.cut_by_change);
                    return;
                }
                connected = connect => match connected {
                    Ok(Ok(server)) => server,
                    _ => {
                        // The target is down: the client sees its connection closed.
                        ProxyStats::bump(&stats.refused);
                        return;
                    }
                },
            };
            let live = Live { control: control.clone(), started, silenced: AtomicBool::new(false) };
            forward(client, server, &live, control, &stats).await;
        }
    }
}

/// Forwards both ways until either side closes, the byte budget runs out, or a fault change
/// cuts the connection.
async fn forward(
    client: TcpStream,
    server: TcpStream,
    live: &Live,
    mut control: watch::Receiver<Control>,
    stats: &ProxyStats,
) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = pump(client_read, server_write, live, Flow::ClientToServer, stats);
    let down = pump(server_read, client_write, live, Flow::ServerToClient, stats);
    tokio::pin!(up, down);
    let (mut up_done, mut down_done) = (false, false);
    // Half-closes are passed on; a cut or a broken side ends the whole connection.
    while !(up_done && down_done) {
        let end = tokio::select! {
            changed = control.changed() => {
                if changed.is_err() {
                    // The proxy is gone.
                    return;
                }
                control.borrow_and_update();
                match live.fault() {
                    Some(Fault::BlackHole) => {
                        ProxyStats::bump(&stats.silenced);
                        continue;
                    }
                    Some(_) => continue,
                    None => End::Changed,
                }
            }
            end = &mut up, if !up_done => {
                up_done = true;
                end
            }
            end = &mut down, if !down_done => {
                down_done = true;
                end
            }
        };
        match end {
            End::Eof => {}
            // Counted in `pump`, before the client could see the close.
            End::Cut => return,
            End::Changed => {
                ProxyStats::bump(&stats.cut_by_change);
                return;
            }
            End::Broken => return,
        }
    }
}

/// Reads and discards until the client goes away.
async fn swallow(mut client: TcpStream) {
    let mut sink = vec![0u8; 16 * 1024];
    while let Ok(1..) = client.read(&mut sink).await {}
}

/// Copies one direction, applying the connection's fault as it is at each chunk.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    live: &Live,
    flow: Flow,
    stats: &ProxyStats,
) -> End {
    let counter = match flow {
        Flow::ClientToServer => &stats.bytes_up,
        Flow::ServerToClient => &stats.bytes_down,
    };
    let mut buffer = vec![0u8; 16 * 1024];
    let mut passed = 0usize;
    loop {
        let read = match from.read(&mut buffer).await {
            // A black hole does not pass on a close either.
            Ok(0) if live.fault() == Some(Fault::BlackHole) => return std::future::pending().await,
            Ok(0) => {
                let _ = to.shutdown().await;
                return End::Eof;
            }
            Ok(read) => read,
            Err(_) => return End::Broken,
        };
        let mut chunk = &buffer[..read];
        let mut cut = false;
        match live.fault() {
            None => return End::Changed,
            Some(Fault::BlackHole) => continue,
            Some(Fault::Delay(delay)) => tokio::time::sleep(delay).await,
            Some(Fault::CutAfter { bytes, direction }) if direction == flow => {
                let room = bytes.saturating_sub(passed);
                if chunk.len() >= room {
                    chunk = &chunk[..room];
                    cut = true;
                }
            }
            Some(Fault::Pass | Fault::Refuse | Fault::CutAfter { .. }) => {}
        }
        // A chunk held back by a delay is dropped if the connection went silent meanwhile.
        match live.fault() {
            None => return End::Changed,
            Some(Fault::BlackHole) => continue,
            Some(_) => {}
        }
        if !chunk.is_empty() && to.write_all(chunk).await.is_err() {
            return End::Broken;
        }
        passed += chunk.len();
        counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        if cut {
            // Count before returning: returning drops `to`, which closes the client's side, and a
            // test may read the counters as soon as it sees that close.
            ProxyStats::bump(&stats.cut_after_bytes);
            return End::Cut;
        }
    }
}
