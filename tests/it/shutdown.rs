//! Shutdown: stop accepting, let in-flight work finish, flush; open `Watch` streams end with the
//! node instead of holding it up until the grace period runs out.

use std::time::Duration;

use hanoi247::proto::{MessageState, Precedence, WatchRequest};
use tokio_stream::StreamExt;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_an_open_watch_stream_and_completes_promptly() {
    let mut net = Network::new(&["VN", "FR"]).await;
    net.start("VN").await;
    let mut vn = net.desk("VN");
    let mut events = vn.watch(WatchRequest { after_sequence: None }).await.unwrap().into_inner();
    let id = submit(&mut vn, advice_request("FR", Precedence::Routine, "watched")).await;
    let event = tokio::time::timeout(DEADLINE, events.next()).await.unwrap().unwrap().unwrap();
    assert_eq!((event.message_id.as_str(), event.state()), (id.as_str(), MessageState::Queued));
    // The watcher keeps reading while the node stops.
    let reader = tokio::spawn(async move { while let Some(Ok(_)) = events.next().await {} });

    let started = tokio::time::Instant::now();
    tokio::time::timeout(DEADLINE, net.stop("VN")).await.expect("the node stops");
    // The node's grace period for in-flight calls is 10 s: the stream must not need it.
    assert!(started.elapsed() < Duration::from_secs(5), "shutdown took {:?}", started.elapsed());
    tokio::time::timeout(DEADLINE, reader).await.expect("the watch stream ends with the node").unwrap();
}
