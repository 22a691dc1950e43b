//! Issue 9 (group commit): concurrent `Submit`s share flushes, and nobody is told "stored"
//! before the flush that covers their write: SIGKILL right after a burst of concurrent Submits,
//! and every acknowledged one is there after the restart.

use hanoi247::proto::{GetRequest, MessageState};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_confirmed_submit_of_a_concurrent_burst_survives_sigkill() {
    let net = Network::new(&["VN", "FR"]).await;
    let vn_process = net.spawn("VN").await;
    // Killed in the middle of a burst of 32 writers, with submits in flight.
    let confirmed = burst_then_kill9(&net, "VN", vn_process, 32, 0, 400).await;

    let _vn_process = net.spawn("VN").await;
    let mut vn = net.desk("VN");
    for id in &confirmed {
        let stored = vn.get(GetRequest { id: id.clone() }).await;
        let message = stored.unwrap_or_else(|s| panic!("{id} was confirmed but is gone: {s:?}")).into_inner();
        let state = message.message.unwrap().state();
        assert!(matches!(state, MessageState::Queued | MessageState::WaitingRetry), "{id}: {state:?}");
    }
    eprintln!("{} confirmed submissions all survived SIGKILL", confirmed.len());
}
