//! The protos held to buf's standard (`buf.yaml`): `buf lint` passes, the tree as it stands is
//! compatible with the released protos (`proto-released/`), and a breaking change to `Envelope`
//! — the message every State's node must read — is refused by `buf breaking`.
//!
//! Uses the buf that `.ci/run` installs from npm (`<target>/tmp/buf`), else one on PATH; without
//! either the test prints `SKIPPED: <reason>` on stderr and returns.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The pinned buf `.ci/run` installs, else `buf` on PATH, if either runs.
fn find_buf() -> Option<PathBuf> {
    let installed = Path::new(env!("CARGO_TARGET_TMPDIR")).join("buf/node_modules/.bin/buf");
    [installed, PathBuf::from("buf")]
        .into_iter()
        .find(|buf| Command::new(buf).arg("--version").output().is_ok_and(|out| out.status.success()))
}

fn skipped(why: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "SKIPPED: {why}");
}

fn buf(buf: &Path, dir: &Path, args: &[&str]) -> Output {
    Command::new(buf).args(args).current_dir(dir).output().unwrap()
}

/// What buf printed, both streams (it reports findings on stdout, failures on stderr).
fn said(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A copy of the buf workspace (config, protos, baseline) with `change` applied to
/// `proto/hanoi247/v1/envelope.proto`.
fn workspace_with_envelope_change(change: impl FnOnce(&str) -> String) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(repo().join("buf.yaml"), dir.path().join("buf.yaml")).unwrap();
    copy_tree(&repo().join("proto"), &dir.path().join("proto"));
    copy_tree(&repo().join("proto-released"), &dir.path().join("proto-released"));
    let envelope = dir.path().join("proto/hanoi247/v1/envelope.proto");
    let before = std::fs::read_to_string(&envelope).unwrap();
    let after = change(&before);
    assert_ne!(before, after, "the change must change envelope.proto");
    std::fs::write(&envelope, after).unwrap();
    dir
}

const AGAINST_RELEASED: [&str; 4] = ["breaking", "proto", "--against", "proto-released"];

#[test]
fn protos_pass_buf_lint_and_breaking_changes_to_envelope_are_refused() {
    let Some(buf_bin) = find_buf() else {
        return skipped("buf not installed (.ci/run installs @bufbuild/buf from npm into <target>/tmp/buf)");
    };

    let lint = buf(&buf_bin, repo(), &["lint"]);
    assert!(lint.status.success(), "buf lint: {}", said(&lint));

    let unchanged = buf(&buf_bin, repo(), &AGAINST_RELEASED);
    assert!(
        unchanged.status.success(),
        "the protos as they stand must not break the released ones: {}",
        said(&unchanged)
    );

    // Envelope.subject (field 8) from string to bytes: same wire type, but a JSON client and
    // every generated client see another type.
    let retyped = workspace_with_envelope_change(|text| {
        let (head, tail) = text.split_once("message Envelope {").unwrap();
        format!(
            "{head}message Envelope {{{}",
            tail.replacen("  string subject = 8;", "  bytes subject = 8;", 1)
        )
    });
    let out = buf(&buf_bin, retyped.path(), &AGAINST_RELEASED);
    assert!(
        !out.status.success(),
        "a field of Envelope changed type, yet buf breaking passed: {}",
        said(&out)
    );
    let report = said(&out);
    assert!(report.contains("\"Envelope\"") && report.contains("subject"), "{report}");
    assert!(report.contains("changed type"), "{report}");

    // Envelope.in_reply_to (field 13) deleted: old nodes would send it, new ones drop it (and the
    // origin's signature over it would no longer verify).
    let deleted = workspace_with_envelope_change(|text| {
        let (head, tail) = text.split_once("message Envelope {").unwrap();
        format!("{head}message Envelope {{{}", tail.replacen("  string in_reply_to = 13;\n", "", 1))
    });
    let out = buf(&buf_bin, deleted.path(), &AGAINST_RELEASED);
    assert!(
        !out.status.success(),
        "a field of Envelope was deleted, yet buf breaking passed: {}",
        said(&out)
    );
    let report = said(&out);
    assert!(report.contains("\"Envelope\"") && report.contains("in_reply_to"), "{report}");

    // The copy itself is not what failed: unchanged, the copied workspace passes.
    let copy = workspace_with_envelope_change(|text| format!("{text}\n"));
    let out = buf(&buf_bin, copy.path(), &AGAINST_RELEASED);
    assert!(out.status.success(), "the copied, unchanged workspace: {}", said(&out));
}
