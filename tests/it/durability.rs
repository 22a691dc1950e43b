//! Issue 9 (group commit): concurrent `Submit`s share flushes, and nobody is told "stored"
//! before the flush that covers their write: SIGKILL right after a burst of concurrent Submits,
//! and every acknowledged one is there after the restart.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use hanoi247::proto::{GetRequest, MessageState, Precedence};
use tokio::sync::Mutex;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_confirmed_submit_of_a_concurrent_burst_survives_sigkill() {
    let net = Network::new(&["VN", "FR"]).await;
    let vn_process = net.spawn("VN").await;
    let confirmed = Arc::new(Mutex::new(Vec::new()));
    let killing = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for writer in 0..32 {
        let (mut desk, confirmed, killing) = (net.desk("VN"), Arc::clone(&confirmed), Arc::clone(&killing));
        writers.push(tokio::spawn(async move {
            for i in 0..1000 {
                if killing.load(Ordering::SeqCst) {
                    return;
                }
                let request = advice_request("FR", Precedence::Routine, &format!("burst {writer}/{i}"));
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
    // Kill in the middle of the burst, with submits in flight.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while confirmed.lock().await.len() < 400 {
        assert!(tokio::time::Instant::now() < deadline, "the burst is too slow");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    killing.store(true, Ordering::SeqCst);
    vn_process.kill9();
    for writer in writers {
        writer.await.unwrap();
    }
    let confirmed = confirmed.lock().await.clone();

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
