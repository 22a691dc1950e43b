//! Watches acknowledgement deadlines: when a request passes its deadline without an
//! acknowledgement, it is announced once as OVERDUE (a stored event for `Watch`, a WARN log
//! line; metrics count it), at the sender and at the receiver alike. It also keeps the
//! preservation clock: before a preservation lapses (`preserved_until`), a reminder at each lead
//! time of `[preservation] reminders` (an event, an audit record and a `preservation_expiring`
//! notification), by the node's clock.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::runtime::context::NodeContext;
use crate::store::{StoreError, awaits_acknowledgement, peer_of, view_at};
use crate::store_proto::StoredMessage;

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
        if let Err(error) = remind_preservations(&context).await {
            tracing::error!(%error, "cannot check the preservation clock");
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

/// The reminder due for a preservation preserved until `until` at `now`: the shortest lead
/// time already reached, unless that one (or a shorter one) was given for this date. `None`
/// once it lapsed or before the longest lead time.
fn reminder_due(
    leads: &[Duration],
    until: SystemTime,
    now: SystemTime,
    given: Option<(SystemTime, Duration)>,
) -> Option<Duration> {
    let left = until.duration_since(now).ok().filter(|left| !left.is_zero())?;
    let due = leads.iter().copied().filter(|lead| *lead >= left).min()?;
    match given {
        Some((for_date, lead)) if for_date == until && lead <= due => None,
        _ => Some(due),
    }
}

/// Gives the preservation reminders that fell due since the last check.
pub async fn remind_preservations(context: &NodeContext) -> Result<(), StoreError> {
    let leads = context.config.preservation.leads();
    let Some(longest) = leads.first().copied() else { return Ok(()) };
    let now = context.clock.now();
    let given = |stored: &StoredMessage| {
        let until = stored.reminded_until.as_ref().map(crate::domain::timestamp::to_system)?;
        Some((until, Duration::from_secs(stored.reminded_lead_seconds)))
    };
    let due: Vec<(Uuid, Duration)> = context
        .store
        .preservations(Some(crate::domain::timestamp::plus(now, longest)))?
        .iter()
        .filter_map(|stored| {
            let message = stored.message.as_ref()?;
            let until = crate::domain::timestamp::to_system(message.preserved_until.as_ref()?);
            let lead = reminder_due(&leads, until, now, given(stored))?;
            Some((message.envelope.as_ref()?.id.parse().ok()?, lead))
        })
        .collect();
    if due.is_empty() {
        return Ok(());
    }
    context.store.write(|changes| {
        for (id, lead) in due {
            let Some(mut stored) = changes.get(id)? else { continue };
            let Some(until) = stored.message.as_ref().and_then(|m| m.preserved_until) else { continue };
            stored.reminded_until = Some(until);
            stored.reminded_lead_seconds = lead.as_secs();
            tracing::warn!(message_id = %id, until = %crate::domain::timestamp::rfc3339(&until), "preservation lapses soon");
            changes.put(stored)?;
        }
        Ok::<_, StoreError>(())
    })?;
    context.store.persist().await
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::domain::clock::Clock;
    use crate::node::testing;
    use crate::proto::MessageState;

    #[test]
    fn a_reminder_is_due_once_per_lead_time_and_date() {
        let day = Duration::from_secs(86_400);
        let leads = [14 * day, 7 * day, day];
        let now = SystemTime::UNIX_EPOCH + 1000 * day;
        let until = now + 10 * day;
        assert_eq!(reminder_due(&leads, until, now, None), Some(14 * day));
        assert_eq!(reminder_due(&leads, until, now, Some((until, 14 * day))), None, "given");
        assert_eq!(reminder_due(&leads, until, now + 4 * day, Some((until, 14 * day))), Some(7 * day));
        assert_eq!(reminder_due(&leads, until + 30 * day, now, None), None, "not yet");
        assert_eq!(reminder_due(&leads, until, until, None), None, "lapsed");
        let moved = until + 20 * day;
        assert_eq!(reminder_due(&leads, moved, moved - 2 * day, Some((until, day))), Some(7 * day));
    }

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
        assert_eq!(reminder_due(&[], far, start, None), None);
        manual.advance(Duration::from_secs(3600));
        announce_overdue(&context).await.unwrap();
        assert_eq!(crate::store::events::latest(&context.store), last);
    }
}
