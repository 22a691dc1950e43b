//! Watches acknowledgement deadlines: when a request passes its deadline without an
//! acknowledgement, it is announced once as OVERDUE (a stored event for `Watch`, a WARN log
//! line; metrics count it), at the sender and at the receiver alike.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::runtime::context::NodeContext;
use crate::store::{StoreError, awaits_acknowledgement, peer_of, view_at};

/// How often deadlines are checked: the delay between a deadline and its announcement.
const CHECK_EVERY: Duration = Duration::from_millis(500);

/// Runs until `stop`.
pub async fn run(context: Arc<NodeContext>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(error) = announce_overdue(&context).await {
            tracing::error!(%error, "cannot check acknowledgement deadlines");
        }
    }
}

/// Announces every request that became overdue since the last check.
pub async fn announce_overdue(context: &NodeContext) -> Result<(), StoreError> {
    let now = context.clock.now();
    let due: Vec<Uuid> = context
        .store
        .overdue(now)?
        .iter()
        .filter(|stored| !stored.overdue_announced)
        .filter_map(|stored| stored.message.as_ref()?.envelope.as_ref()?.id.parse().ok())
        .collect();
    if due.is_empty() {
        return Ok(());
    }
    let announced = context.store.write(|changes| {
        let mut announced = Vec::new();
        for id in due {
            let Some(mut stored) = changes.get(id)? else { continue };
            let still_waiting = stored.message.as_ref().is_some_and(awaits_acknowledgement);
            if stored.overdue_announced || !still_waiting {
                continue;
            }
            stored.overdue_announced = true;
            announced.push(view_at(&stored, now));
            changes.put(stored)?;
        }
        Ok::<_, StoreError>(announced)
    })?;
    context.store.persist().await?;
    for message in &announced {
        let envelope = message.envelope.clone().unwrap_or_default();
        tracing::warn!(
            message_id = %envelope.id,
            peer = peer_of(message),
            precedence = envelope.precedence().as_str_name(),
            direction = message.direction().as_str_name(),
            deadline = %message.ack_deadline.as_ref().map(crate::domain::timestamp::rfc3339).unwrap_or_default(),
            "request OVERDUE: not acknowledged by its deadline"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::domain::clock::Clock;
    use crate::node::testing;
    use crate::proto::MessageState;

    #[tokio::test]
    async fn a_request_is_announced_overdue_once_the_clock_passes_its_deadline() {
        let start = SystemTime::now();
        let manual = Clock::manual(start);
        let (_dir, context) = testing::context(manual.clock()).await;
        let far = start + Duration::from_secs(365 * 86_400);
        let id = testing::store_request(&context, MessageState::Received, start, far);

        announce_overdue(&context).await.unwrap();
        assert!(!context.store.get(id).unwrap().unwrap().overdue_announced, "not before its deadline");

        manual.advance(context.config.deadlines.flash + Duration::from_secs(1));
        announce_overdue(&context).await.unwrap();
        let stored = context.store.get(id).unwrap().unwrap();
        assert!(stored.overdue_announced, "announced once the clock passed the deadline");
        assert!(view_at(&stored, manual.now()).overdue);
        let last = crate::store::events::latest(&context.store);
        let events = context.store.events_between(0, last, 100).unwrap();
        let overdue: Vec<_> = events.iter().filter(|e| e.overdue).collect();
        assert_eq!(overdue.len(), 1, "{events:?}");
        assert_eq!(overdue[0].message_id, id.to_string());

        // Announced once: a later look changes nothing.
        manual.advance(Duration::from_secs(3600));
        announce_overdue(&context).await.unwrap();
        assert_eq!(crate::store::events::latest(&context.store), last);
    }
}
