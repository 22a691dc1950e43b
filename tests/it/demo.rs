//! Acceptance 1 (in part): `hanoi247 demo` tells the story and exits 0.

use std::process::Command;

#[test]
fn demo_tells_the_story_and_exits_zero() {
    let output = Command::new(env!("CARGO_BIN_EXE_hanoi247")).arg("demo").output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "demo failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    for step in [
        "FLASH preservation request",
        "FR's receipt",
        "FR's signed receipt verify",
        "ACKNOWLEDGED",
        "ANSWERED",
        "WAITING_RETRY",
        "DE is back",
        "DELIVERED",
    ] {
        assert!(stdout.contains(step), "missing step '{step}' in:\n{stdout}");
    }
}
