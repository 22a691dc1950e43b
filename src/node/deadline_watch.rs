//! Watches acknowledgement deadlines: when a request passes its deadline without an
//! acknowledgement, it is announced once as OVERDUE (a stored event for `Watch`, a WARN log
//! line; metrics count it), at the sender and at the receiver alike.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::runtime::context::NodeContext;
use crate::store::{StoreError, awaits_acknowledgement, peer_of, view};

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
    let due: Vec<Uuid> = context
        .store
        .overdue(SystemTime::now())?
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
            announced.push(view(&stored));
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
