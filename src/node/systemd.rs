//! systemd's service notification protocol (`Type=notify`), in the few lines it takes: one
//! datagram per state change to the unix socket named by `NOTIFY_SOCKET` (`READY=1` once the
//! listeners are bound, `STOPPING=1` when shutdown starts, `WATCHDOG=1` every half of
//! `WATCHDOG_USEC`). Without `NOTIFY_SOCKET` (not under systemd) every call does nothing.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// A connection to systemd's notification socket.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
}

impl Notifier {
    /// The notifier `NOTIFY_SOCKET` names; `None` when the variable is unset or empty, or the
    /// socket cannot be reached (then logged: systemd would time the start out).
    pub fn from_env() -> Option<Self> {
        let path = std::env::var_os("NOTIFY_SOCKET").filter(|p| !p.is_empty())?;
        let socket = match UnixDatagram::unbound().and_then(|socket| {
            connect(&socket, &path)?;
            Ok(socket)
        }) {
            Ok(socket) => socket,
            Err(error) => {
                tracing::error!(socket = ?path, %error, "NOTIFY_SOCKET cannot be reached: systemd will not hear READY=1");
                return None;
            }
        };
        Some(Self { socket })
    }

    /// Sends one state (`READY=1`, `STOPPING=1`, `WATCHDOG=1`, `STATUS=...`); a failure is
    /// logged and otherwise ignored: the node keeps serving whatever its supervisor hears.
    pub fn notify(&self, state: &str) {
        if let Err(error) = self.socket.send(state.as_bytes()) {
            tracing::warn!(state, %error, "cannot notify systemd");
        }
    }

    /// How often to send `WATCHDOG=1`: half of `WATCHDOG_USEC`, when the watchdog is on for this
    /// process (`WATCHDOG_PID` unset or ours).
    pub fn watchdog_interval() -> Option<Duration> {
        let usec = std::env::var("WATCHDOG_USEC").ok();
        let pid = std::env::var("WATCHDOG_PID").ok();
        watchdog_interval(usec.as_deref(), pid.as_deref(), std::process::id())
    }
}

/// Half of `usec` (WATCHDOG_USEC), unless `pid` (WATCHDOG_PID) names another process.
fn watchdog_interval(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    if pid.is_some_and(|pid| pid.parse::<u32>().ok() != Some(own_pid)) {
        return None;
    }
    let micros: u64 = usec?.parse().ok()?;
    (micros > 0).then(|| Duration::from_micros(micros / 2))
}

/// Connects to a path, or to an abstract socket when the name starts with `@` (Linux).
fn connect(socket: &UnixDatagram, path: &std::ffi::OsStr) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        #[cfg(target_os = "linux")]
        {
            use std::os::linux::net::SocketAddrExt;
            let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            return socket.connect_addr(&address);
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = name;
            return Err(std::io::Error::other("abstract sockets exist on Linux only"));
        }
    }
    socket.connect(std::path::Path::new(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_is_pinged_at_half_its_timeout_and_only_by_the_process_it_watches() {
        assert_eq!(watchdog_interval(Some("30000000"), None, 7), Some(Duration::from_secs(15)));
        assert_eq!(watchdog_interval(Some("400000"), Some("7"), 7), Some(Duration::from_millis(200)));
        assert_eq!(watchdog_interval(Some("400000"), Some("8"), 7), None, "another process's watchdog");
        assert_eq!(watchdog_interval(Some("0"), None, 7), None, "0 turns it off");
        assert_eq!(watchdog_interval(Some("soon"), None, 7), None);
        assert_eq!(watchdog_interval(None, None, 7), None);
    }

    #[test]
    fn states_arrive_as_one_datagram_each() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let receiver = UnixDatagram::bind(&path).unwrap();
        let socket = UnixDatagram::unbound().unwrap();
        connect(&socket, path.as_os_str()).unwrap();
        let notifier = Notifier { socket };
        notifier.notify("READY=1");
        notifier.notify("STOPPING=1");
        let mut buffer = [0u8; 64];
        let n = receiver.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..n], b"READY=1");
        let n = receiver.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..n], b"STOPPING=1");
    }
}
