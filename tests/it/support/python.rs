//! Python for the tests that run a real Python program against our nodes (the agency example,
//! the console's browser tests): a virtualenv per requirements file, cached under the target
//! directory and rebuilt when the file changes, and commands run with a deadline. Where Python
//! 3.11 or later with `venv` (Debian: `python3-venv`) is missing, the tests say `SKIPPED: …` on
//! stderr and return (`.ci/run` installs it when running as root).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Creating a virtualenv (no network).
const VENV_DEADLINE: Duration = Duration::from_secs(120);
/// Installing the requirements from PyPI on a fresh machine.
const INSTALL_DEADLINE: Duration = Duration::from_secs(600);

/// The file inside a virtualenv that records which requirements it was built from.
const MARKER: &str = "hanoi247-requirements.txt";

/// A virtualenv, or why there is none.
pub enum Venv {
    /// The virtualenv's python.
    Ready(PathBuf),
    /// pip could not reach the package index; the line that says why.
    PypiUnreachable(String),
    /// No usable Python on this machine: what is missing and how to get it.
    Unavailable(String),
}

/// The oldest Python the tests' programs run on (`tomllib`).
pub const MIN_PYTHON: (u32, u32) = (3, 11);

/// Says why a test did nothing, straight to stderr (past the harness's capture, which hides a
/// passing test's stdout) so every run shows it.
pub fn skipped(why: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "SKIPPED: {why}");
}

/// What keeps `python3` from making a virtualenv here, if anything: not installed, older than
/// [`MIN_PYTHON`], or without `venv`/`ensurepip` (Debian splits them into `python3-venv`).
pub fn python_missing() -> Option<String> {
    let (major, minor) = MIN_PYTHON;
    let probe = format!(
        "import sys\nif sys.version_info < ({major}, {minor}): print('Python %d.%d is older than {major}.{minor}' % sys.version_info[:2]); sys.exit(1)\n\
         try:\n    import venv, ensurepip\nexcept ImportError as e: print('no venv/ensurepip (%s): install python3-venv' % e); sys.exit(1)\n"
    );
    match Command::new("python3").args(["-c", &probe]).output() {
        Err(error) => Some(format!("python3 {major}.{minor}+ with venv is needed ({error})")),
        Ok(output) if !output.status.success() => {
            let said = String::from_utf8_lossy(&output.stdout).trim().to_owned();
            Some(format!("python3 cannot make a virtualenv: {said}"))
        }
        Ok(_) => None,
    }
}

/// What a finished command did: its exit status and its stdout and stderr together.
pub struct Ran {
    pub status: ExitStatus,
    pub output: String,
}

/// Runs `command` with stdout and stderr into one log file, killing it at the deadline.
pub fn run_with_deadline(command: &mut Command, log: &Path, within: Duration) -> Ran {
    let file = File::create(log).unwrap();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    let status = wait_child(&mut child, within).unwrap_or_else(|| {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{command:?} did not finish within {within:?}:\n{}", read(log))
    });
    Ran { status, output: read(log) }
}

/// Polls the child until it exits or the deadline passes (`None`).
fn wait_child(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A file's text, empty when it cannot be read.
pub fn read(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
}

/// The line of a failed pip run that shows the package index could not be reached at all, if
/// any. Other failures (a pinned version that does not exist, a build error) are not this.
pub fn pypi_unreachable(pip_output: &str) -> Option<String> {
    const MARKERS: [&str; 10] = [
        "Failed to establish a new connection",
        "NewConnectionError",
        "Temporary failure in name resolution",
        "Name or service not known",
        "Network is unreachable",
        "Connection refused",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "ProxyError",
        "Could not fetch URL",
    ];
    pip_output
        .lines()
        .find(|line| MARKERS.iter().any(|m| line.contains(m)))
        .map(|line| line.trim().to_owned())
}

/// The virtualenv `<target>/tmp/<name>` with `requirements` installed, (re)built when that file
/// changed. Built beside the cache and renamed into place, so an interrupted install never
/// leaves a half-built cache behind.
pub fn cached_venv(name: &str, requirements_path: &Path) -> Venv {
    let requirements = std::fs::read_to_string(requirements_path).unwrap();
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let python = |dir: &Path| dir.join("bin/python");
    if std::fs::read_to_string(venv.join(MARKER)).is_ok_and(|m| m == requirements) && python(&venv).exists() {
        return Venv::Ready(python(&venv));
    }

    if let Some(missing) = python_missing() {
        return Venv::Unavailable(missing);
    }
    let building = venv.with_file_name(format!("{name}.building-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&building);
    std::fs::create_dir_all(building.parent().unwrap()).unwrap();
    let log = venv.with_file_name(format!("{name}.building-{}.log", std::process::id()));
    let made =
        run_with_deadline(Command::new("python3").args(["-m", "venv"]).arg(&building), &log, VENV_DEADLINE);
    assert!(made.status.success(), "python3 -m venv failed ({}):\n{}", made.status, made.output);

    let pip = run_with_deadline(
        Command::new(python(&building))
            .args(["-m", "pip", "install", "--disable-pip-version-check", "--no-input"])
            .args(["--retries", "2", "--timeout", "30", "-r"])
            .arg(requirements_path),
        &log,
        INSTALL_DEADLINE,
    );
    if !pip.status.success() {
        let _ = std::fs::remove_dir_all(&building);
        if let Some(reason) = pypi_unreachable(&pip.output) {
            let _ = std::fs::remove_file(&log);
            return Venv::PypiUnreachable(reason);
        }
        panic!("pip install -r {} failed ({}):\n{}", requirements_path.display(), pip.status, pip.output);
    }
    std::fs::write(building.join(MARKER), &requirements).unwrap();
    let _ = std::fs::remove_dir_all(&venv);
    std::fs::rename(&building, &venv).unwrap();
    let _ = std::fs::remove_file(&log);
    Venv::Ready(python(&venv))
}

#[test]
fn pip_failures_are_told_apart() {
    let refused = "WARNING: Retrying (Retry(total=0, connect=None, read=None, redirect=None, status=None)) \
        after connection broken by 'NewConnectionError('<pip._vendor.urllib3.connection.HTTPConnection object \
        at 0x7f678dcf4cd0>: Failed to establish a new connection: [Errno 111] Connection refused')': /simple/grpcio/\n\
        ERROR: Could not find a version that satisfies the requirement grpcio==1.85.1 (from versions: none)\n\
        ERROR: No matching distribution found for grpcio==1.85.1\n";
    let reason = pypi_unreachable(refused).expect("a refused connection is unreachability");
    assert!(reason.contains("Connection refused"), "{reason}");
    let bad_pin = "ERROR: Could not find a version that satisfies the requirement grpcio==0.0.1 \
        (from versions: 1.85.0, 1.85.1)\nERROR: No matching distribution found for grpcio==0.0.1\n";
    assert_eq!(pypi_unreachable(bad_pin), None, "a wrong pin must fail the test, not skip it");
}

/// The probe finds this machine's Python as it is: when `python3 -m venv` works, nothing is
/// missing; when the probe says something is, making a venv really fails or Python is too old.
#[test]
fn the_python_probe_agrees_with_venv() {
    let scratch = tempfile::tempdir().unwrap();
    let made = Command::new("python3").args(["-m", "venv"]).arg(scratch.path().join("v")).output();
    let venv_works = made.as_ref().is_ok_and(|o| o.status.success());
    match python_missing() {
        None => assert!(venv_works, "the probe found Python usable but venv failed: {made:?}"),
        Some(reason) => {
            assert!(reason.contains("older than") || !venv_works, "{reason}");
            skipped(&format!("this machine's Python: {reason}"));
        }
    }
}
