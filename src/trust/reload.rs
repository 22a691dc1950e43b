//! When to read files again without a restart: on SIGHUP and when a watched file changes
//! (its modification time or size, polled every [`POLL_INTERVAL`]; no file-watching crate).
//! Anything that can be reloaded (the signed directory, the TLS certificates, keys and CRLs,
//! the desk clients of `[[clients]]`) subscribes to one [`ReloadTrigger`] and re-reads its own
//! files when it fires.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How often watched files are looked at.
pub const POLL_INTERVAL: Duration = crate::config::DEFAULT_POLL_INTERVAL;

/// Fires for every SIGHUP and every change of a watched file; cheap to clone.
#[derive(Clone)]
pub struct ReloadTrigger {
    /// Counts the reasons to reload; subscribers only care that it moved.
    fired: Arc<watch::Sender<u64>>,
    /// The watched files and what they looked like last time.
    watched: Arc<Mutex<Vec<Watched>>>,
}

/// Modification time and size.
type FileState = (SystemTime, u64);

/// A watched file and how it looked at the last look (`None`: missing).
type Watched = (PathBuf, Option<FileState>);

fn file_state(path: &std::path::Path) -> Option<FileState> {
    std::fs::metadata(path).ok().and_then(|m| Some((m.modified().ok()?, m.len())))
}

impl Default for ReloadTrigger {
    fn default() -> Self {
        Self::new()
    }
}

impl ReloadTrigger {
    /// A trigger that has not fired.
    pub fn new() -> Self {
        Self { fired: Arc::new(watch::channel(0).0), watched: Arc::default() }
    }

    /// A receiver whose `changed()` completes after each firing (several firings before it
    /// looks count as one: a reload reads the files as they are then).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.fired.subscribe()
    }

    /// Fires: every subscriber reloads.
    pub fn fire(&self, reason: &str) {
        tracing::info!(%reason, "reloading");
        self.fired.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Also fires when `path` changes from how it is now (see [`ReloadTrigger::poll_files`]).
    pub fn watch_file(&self, path: PathBuf) {
        // A poisoned lock means a panic while pushing to a Vec; the list is still usable.
        let mut watched = self.watched.lock().unwrap_or_else(|p| p.into_inner());
        if !watched.iter().any(|(p, _)| *p == path) {
            let state = file_state(&path);
            watched.push((path, state));
        }
    }

    /// Looks at the watched files every `every` until `stop`, firing when one's modification
    /// time or size differs from what was last acted on (a file that appears or disappears
    /// counts) and has stayed the same for one more look: a certificate and its key written one
    /// after the other are then read together.
    pub async fn poll_files(self, every: Duration, stop: CancellationToken) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // What each changed file looked like at the previous look, while it settles.
        let mut settling: Vec<Watched> = Vec::new();
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let mut settled = Vec::new();
            let mut still_changing = false;
            {
                let mut watched = self.watched.lock().unwrap_or_else(|p| p.into_inner());
                let mut next_settling = Vec::new();
                for (path, acted_on) in watched.iter_mut() {
                    let now = file_state(path);
                    if *acted_on == now {
                        continue;
                    }
                    let previous = settling.iter().find(|(p, _)| p == path).map(|(_, state)| *state);
                    if previous == Some(now) {
                        settled.push((path.clone(), now));
                    } else {
                        still_changing = true;
                        next_settling.push((path.clone(), now));
                    }
                }
                // Act only when nothing is still being written, so that related files go together.
                if still_changing {
                    next_settling.append(&mut settled);
                } else {
                    for (path, state) in &settled {
                        if let Some(entry) = watched.iter_mut().find(|(p, _)| p == path) {
                            entry.1 = *state;
                        }
                    }
                }
                settling = next_settling;
            }
            if !settled.is_empty() {
                let names: Vec<String> = settled.iter().map(|(p, _)| p.display().to_string()).collect();
                self.fire(&format!("changed: {}", names.join(", ")));
            }
        }
    }
}

/// The desk clients and their roles (`[[clients]]` of node.toml), read again from the node config
/// on reload: a client added there is let in by the next call, without a restart. Everything else
/// in node.toml is read only at start (a reload says so when it changed).
pub struct LiveClients {
    source: Option<PathBuf>,
    /// The rest of the config as the node started with it, to tell what a reload cannot apply.
    started: String,
    current: std::sync::RwLock<Arc<Vec<ClientEntry>>>,
}

use crate::config::{ClientEntry, ConfigError, NodeConfig};

/// What a reload of `[[clients]]` changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientsReloaded {
    /// Names now listed that were not.
    pub added: Vec<String>,
    /// Names no longer listed.
    pub removed: Vec<String>,
    /// Names listed with another role.
    pub changed: Vec<String>,
    /// Other keys of node.toml differ from what the node started with: they need a restart.
    pub restart_needed: bool,
}

/// node.toml without `[[clients]]`, for comparing what only a restart applies.
fn without_clients(config: &NodeConfig) -> String {
    let mut rest = config.clone();
    rest.clients.clear();
    toml::to_string(&rest).unwrap_or_default()
}

impl LiveClients {
    /// The clients of `config`, reloaded from the file it was loaded from.
    pub fn new(config: &NodeConfig) -> Self {
        Self {
            source: config.source.clone(),
            started: without_clients(config),
            current: std::sync::RwLock::new(Arc::new(config.clients.clone())),
        }
    }

    /// The role of desk client `name`, if it has one now.
    pub fn role_of(&self, name: &str) -> Option<crate::domain::access::Role> {
        self.current().iter().find(|c| c.name == name).map(|c| c.role)
    }

    /// The clients now.
    pub fn current(&self) -> Arc<Vec<ClientEntry>> {
        // Only whole values are ever stored, so a poisoned lock still holds a consistent list.
        Arc::clone(&self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Reads node.toml again and takes its `[[clients]]`. A file that does not load (bad TOML,
    /// a bad value anywhere) changes nothing. A config not loaded from a file has nothing to
    /// reload.
    pub fn reload(&self) -> Result<ClientsReloaded, ConfigError> {
        let Some(source) = &self.source else { return Ok(ClientsReloaded::default()) };
        let config = NodeConfig::load(source)?;
        let old = self.current();
        let role = |list: &[ClientEntry], name: &str| list.iter().find(|c| c.name == name).map(|c| c.role);
        let names = |list: &[ClientEntry]| list.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
        let report = ClientsReloaded {
            added: names(&config.clients).into_iter().filter(|n| role(&old, n).is_none()).collect(),
            removed: names(&old).into_iter().filter(|n| role(&config.clients, n).is_none()).collect(),
            changed: names(&config.clients)
                .into_iter()
                .filter(|n| role(&old, n).is_some_and(|r| Some(r) != role(&config.clients, n)))
                .collect(),
            restart_needed: without_clients(&config) != self.started,
        };
        *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(config.clients);
        Ok(report)
    }

    /// The node config file it reloads from, if any.
    pub fn source(&self) -> Option<&std::path::Path> {
        self.source.as_deref()
    }
}

/// Listens for SIGHUP. Call it before the node announces it is up: from then on SIGHUP no
/// longer terminates the process.
pub fn hangup_signal() -> std::io::Result<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
}

/// Fires `trigger` for every SIGHUP received on `signal`, until `stop`.
pub async fn forward_hangups(
    mut signal: tokio::signal::unix::Signal,
    trigger: ReloadTrigger,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            received = signal.recv() => match received {
                Some(()) => trigger.fire("SIGHUP"),
                None => return,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE: &str = r#"
code = "VN"
network = "hanoi247-dev"
data_dir = "data"
[tls]
network_ca = "n.pem"
cert = "node.pem"
key = "node.key"
local_ca = "l.pem"
desk_cert = "desk.pem"
desk_key = "desk.key"
[directory]
file = "directory.toml"
public_key = "0000000000000000000000000000000000000000000000000000000000000000"
"#;

    #[test]
    fn clients_are_reloaded_from_the_node_config_and_a_bad_file_changes_nothing() {
        use crate::domain::access::Role;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        let with = |clients: &str| format!("{NODE}\n{clients}");
        std::fs::write(&path, with("[[clients]]\nname = \"alice\"\nrole = \"officer\"\n[[clients]]\nname = \"bob\"\nrole = \"agency\"\n")).unwrap();
        let live = LiveClients::new(&NodeConfig::load(&path).unwrap());
        assert_eq!(live.role_of("alice"), Some(Role::Officer));
        assert_eq!(live.role_of("carol"), None);

        std::fs::write(&path, with("[[clients]]\nname = \"alice\"\nrole = \"auditor\"\n[[clients]]\nname = \"carol\"\nrole = \"operator\"\n")).unwrap();
        let report = live.reload().unwrap();
        assert_eq!(
            report,
            ClientsReloaded {
                added: vec!["carol".into()],
                removed: vec!["bob".into()],
                changed: vec!["alice".into()],
                restart_needed: false
            }
        );
        assert_eq!((live.role_of("carol"), live.role_of("bob")), (Some(Role::Operator), None));

        // A bad file is refused, naming the key; the clients in use stay.
        std::fs::write(&path, with("[[clients]]\nname = \"dave\"\nrole = \"boss\"\n")).unwrap();
        let err = live.reload().unwrap_err().to_string();
        assert!(err.contains("role"), "{err}");
        assert_eq!(live.role_of("carol"), Some(Role::Operator));

        // Another key changed: applied only at restart, and said so.
        std::fs::write(
            &path,
            with("[[clients]]\nname = \"carol\"\nrole = \"operator\"\n")
                .replace("data_dir = \"data\"", "data_dir = \"elsewhere\""),
        )
        .unwrap();
        assert!(live.reload().unwrap().restart_needed);
    }

    #[tokio::test]
    async fn fires_on_demand_and_when_a_watched_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("watched");
        std::fs::write(&path, "one").unwrap();
        let trigger = ReloadTrigger::new();
        let mut fired = trigger.subscribe();
        trigger.fire("test");
        tokio::time::timeout(Duration::from_secs(5), fired.changed()).await.unwrap().unwrap();

        trigger.watch_file(path.clone());
        let stop = CancellationToken::new();
        let poller = tokio::spawn(trigger.clone().poll_files(Duration::from_millis(20), stop.clone()));
        fired.borrow_and_update();
        // The size differs whatever the clock's resolution.
        std::fs::write(&path, "two, longer").unwrap();
        tokio::time::timeout(Duration::from_secs(5), fired.changed()).await.unwrap().unwrap();
        stop.cancel();
        poller.await.unwrap();
    }
}
