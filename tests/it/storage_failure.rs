//! Issue 4 (storage failures): when the store cannot write (here: the "disk" is full, a file
//! size limit on the node process), `Submit` fails with UNAVAILABLE and a clear message, the
//! store keeps whole messages or nothing, and the node recovers by itself once writing works.

use std::time::Duration;

use hanoi247::proto::{GetRequest, MessageState, Precedence};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_submissions_and_the_node_recovers_when_space_returns() {
    let mut net = Network::new(&["VN", "FR"]).await;
    // sled's file starts at one 512 KiB segment; a little more than that fills up quickly.
    let vn_process = net.spawn_with_file_limit("VN", 2048).await;
    let mut vn = net.desk("VN");

    let mut confirmed = Vec::new();
    let refusal = loop {
        assert!(confirmed.len() < 400, "the disk never filled up");
        let mut request = advice_request("FR", Precedence::Routine, &format!("filler {}", confirmed.len()));
        request.body = "x".repeat(16 * 1024);
        match vn.submit(request).await {
            Ok(response) => confirmed.push(response.into_inner().message.unwrap().envelope.unwrap().id),
            Err(status) => break status,
        }
    };
    assert_eq!(refusal.code(), tonic::Code::Unavailable, "{refusal:?}");
    assert!(refusal.message().contains("cannot write its store"), "{}", refusal.message());
    // While it cannot write, every submission is refused the same way, and reads still work.
    let again = vn.submit(advice_request("FR", Precedence::Flash, "while full")).await.unwrap_err();
    assert_eq!(again.code(), tonic::Code::Unavailable);
    let first = vn.get(GetRequest { id: confirmed[0].clone() }).await;
    assert!(first.is_ok() || first.unwrap_err().code() == tonic::Code::Unavailable);

    // Space returns: the node reopens its store by itself and accepts work again.
    vn_process.lift_file_limit();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let after = loop {
        match vn.submit(advice_request("FR", Precedence::Flash, "after recovery")).await {
            Ok(response) => break response.into_inner().message.unwrap().envelope.unwrap().id,
            Err(status) => assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}"),
        }
        assert!(tokio::time::Instant::now() < deadline, "the node did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // Every confirmed message survived and is delivered exactly once; FR holds nothing that
    // VN does not know as a whole message.
    net.start("FR").await;
    for id in confirmed.iter().chain([&after]) {
        wait_state(&mut vn, id, MessageState::Delivered).await;
    }
    let mut fr = net.desk("FR");
    let received = ids(&inbox(&mut fr).await);
    for id in confirmed.iter().chain([&after]) {
        assert_eq!(received.iter().filter(|r| *r == id).count(), 1, "{id} delivered exactly once");
    }
    for id in &received {
        let at_vn = vn.get(GetRequest { id: id.clone() }).await.unwrap().into_inner().message.unwrap();
        assert_eq!(at_vn.state(), MessageState::Delivered, "{id}: whole at VN too");
    }
    let log = std::fs::read_to_string(net.dir().join("VN.log")).unwrap();
    assert!(log.contains("store write failed") && log.contains("store reopened"), "{log}");
    drop(vn_process);
    net.stop("FR").await;
}
