//! A node's deadlines follow its clock: a test moves a manual clock instead of waiting, and the
//! running node expires what is queued and announces what is overdue.

use std::time::{Duration, SystemTime};

use hanoi247::domain::clock::Clock;
use hanoi247::domain::timestamp;
use hanoi247::proto::{MessageState, Precedence, WatchRequest};
use tokio_stream::StreamExt;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_the_clock_expires_a_queued_message_and_makes_a_request_overdue() {
    let mut net = Network::new(&["VN", "FR"]).await;
    let start = SystemTime::now();
    let manual = Clock::manual(start);
    // FR stays down: both requests wait in VN's queue.
    net.start_with_clock("VN", manual.clock()).await;
    let mut vn = net.desk("VN");
    let mut events = vn.watch(WatchRequest { after_sequence: None }).await.unwrap().into_inner();

    let mut expiring = advice_request("FR", Precedence::Immediate, "expires in ten minutes");
    expiring.expires_at = Some(timestamp::from_system(start + Duration::from_secs(600)));
    let expiring = submit(&mut vn, expiring).await;
    let mut waiting = advice_request("FR", Precedence::Flash, "acknowledge within 15 minutes");
    waiting.expires_at = Some(timestamp::from_system(start + Duration::from_secs(7200)));
    let waiting = submit(&mut vn, waiting).await;
    wait_state(&mut vn, &expiring, MessageState::WaitingRetry).await;

    // Past the expiry of the first and the FLASH acknowledgement deadline of the second.
    manual.advance(Duration::from_secs(16 * 60));
    let expired = wait_state(&mut vn, &expiring, MessageState::Expired).await;
    let expired_at = expired.timeline.last().and_then(|t| t.at).map(|at| timestamp::to_system(&at));
    assert!(expired_at.is_some_and(|at| at >= start + Duration::from_secs(16 * 60)), "{expired:?}");
    let overdue = tokio::time::timeout(DEADLINE, async {
        loop {
            let event = events.next().await.unwrap().unwrap();
            if event.overdue {
                return event;
            }
        }
    })
    .await
    .expect("an OVERDUE event once the clock passed the deadline");
    assert_eq!(overdue.message_id, waiting);
    net.stop("VN").await;
}
