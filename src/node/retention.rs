//! Retention of lifecycle events: once an hour (`[retention] interval`) the events older than
//! `[retention] events` (30 days) are removed, oldest first, in bounded steps, each with an audit
//! record. Messages, their timelines and the audit log are never removed here. Uploaded
//! attachments that no message lists are removed `[retention] uploads` after their upload.
//!
//! Invariant: the events kept are always the gap-free run after `Store::events_pruned_through`,
//! so a watcher either gets every event after the one it names or is told (OUT_OF_RANGE) that
//! some were removed; never a silent gap.

use std::sync::Arc;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::runtime::context::NodeContext;

/// Events removed per store write, so one write stays small and other writers are not held up.
const PRUNE_STEP: usize = 10_000;

/// Removes old events every `interval` until `stop`.
pub async fn run(context: Arc<NodeContext>, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(context.config.retention.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        prune(&context, &stop).await;
        remove_unused_uploads(&context).await;
    }
}

/// Removes the uploaded attachments that no message lists once `[retention] uploads` has
/// passed since their upload.
async fn remove_unused_uploads(context: &Arc<NodeContext>) {
    let grace = context.config.retention.uploads;
    let Some(before) = context.clock.now().checked_sub(grace) else { return };
    let store = context.store.clone();
    match tokio::task::spawn_blocking(move || store.remove_unreferenced_uploads(before)).await {
        Ok(Ok(0)) => {}
        Ok(Ok(removed)) => {
            if let Err(error) = context.store.persist().await {
                tracing::warn!(%error, "removing unused uploads is not durable yet");
            }
            tracing::info!(removed, grace = %humantime::format_duration(grace), "unused uploads removed");
        }
        Ok(Err(error)) => {
            tracing::warn!(%error, "unused uploads could not be removed; trying again at the next interval")
        }
        Err(error) => {
            tracing::warn!(%error, "the upload retention task failed; trying again at the next interval")
        }
    }
}

/// One pass: removes every event older than the retention period, a step at a time.
async fn prune(context: &Arc<NodeContext>, stop: &CancellationToken) {
    let keep = context.config.retention.events;
    let Some(before) = context.clock.now().checked_sub(keep) else { return };
    let why = format!("older than {} ([retention] events)", humantime::format_duration(keep));
    while !stop.is_cancelled() {
        let store = context.store.clone();
        let reason = why.clone();
        let removed =
            tokio::task::spawn_blocking(move || store.prune_events(before, PRUNE_STEP, &reason)).await;
        let range = match removed {
            Ok(Ok(range)) => range,
            Ok(Err(error)) => {
                tracing::warn!(%error, "old events could not be removed; trying again at the next interval");
                return;
            }
            Err(error) => {
                tracing::warn!(%error, "the event retention task failed; trying again at the next interval");
                return;
            }
        };
        let count = range.clone().count();
        if count == 0 {
            return;
        }
        if let Err(error) = context.store.persist().await {
            tracing::warn!(%error, "removing old events is not durable yet");
        }
        context.metrics.events_pruned.inc_by(count as u64);
        tracing::info!(first = range.start(), last = range.end(), %why, "old events removed");
        if count < PRUNE_STEP {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::domain::clock::Clock;
    use crate::node::testing;
    use crate::proto::MessageState;

    #[tokio::test]
    async fn events_are_removed_once_the_clock_passes_the_retention_period() {
        let start = SystemTime::now();
        let manual = Clock::manual(start);
        let (_dir, context) = testing::context(manual.clock()).await;
        let far = start + Duration::from_secs(365 * 86_400);
        for _ in 0..2 {
            testing::store_request(&context, MessageState::Received, start, far);
        }
        context.store.persist().await.unwrap();
        let stop = CancellationToken::new();

        prune(&context, &stop).await;
        assert_eq!(context.store.events_pruned_through().unwrap(), 0, "nothing is old yet");

        manual.advance(context.config.retention.events + Duration::from_secs(86_400));
        prune(&context, &stop).await;
        // Every event is old now; the last one stays (watchers count from it).
        assert_eq!(context.store.events_pruned_through().unwrap(), 1);
        assert_eq!(context.metrics.events_pruned.get(), 1);
    }

    /// Uploads `content` as of `at`; returns its digest.
    fn upload(context: &NodeContext, content: &[u8], at: SystemTime) -> [u8; 32] {
        let mut upload = context.store.begin_upload().unwrap();
        upload.write(content).unwrap();
        let (digest, _) = upload.finish().unwrap();
        context
            .store
            .write(|changes| {
                changes.record_upload(&digest, at);
                Ok::<_, crate::store::StoreError>(())
            })
            .unwrap();
        digest
    }

    #[tokio::test]
    async fn an_upload_no_message_lists_is_removed_after_the_grace_period_and_a_listed_one_stays() {
        let start = SystemTime::now();
        let manual = Clock::manual(start);
        let (_dir, context) = testing::context(manual.clock()).await;
        let unused = upload(&context, b"nobody lists me", start);
        let listed = upload(&context, b"a message lists me", start);
        let id = testing::store_request(
            &context,
            MessageState::Queued,
            start,
            start + Duration::from_secs(86_400),
        );
        // The same message again, now listing the attachment: only a first store references, so
        // list it from a second message made like the first.
        let mut stored = context.store.get(id).unwrap().unwrap();
        let message = stored.message.as_mut().unwrap();
        let envelope = message.envelope.as_mut().unwrap();
        envelope.id = uuid::Uuid::now_v7().to_string();
        envelope.attachments.push(crate::proto::Attachment {
            name: "a.txt".into(),
            media_type: "text/plain".into(),
            size_bytes: 18,
            sha256: listed.to_vec(),
        });
        context
            .store
            .write(|changes| {
                stored.seq = changes.next_seq()?;
                changes.put(stored)
            })
            .unwrap();
        context.store.persist().await.unwrap();

        remove_unused_uploads(&context).await;
        assert!(context.store.attachment_size(&unused).unwrap().is_some(), "within the grace period");

        manual.advance(context.config.retention.uploads + Duration::from_secs(1));
        remove_unused_uploads(&context).await;
        assert_eq!(context.store.attachment_size(&unused).unwrap(), None, "removed after it");
        assert_eq!(context.store.attachment_size(&listed).unwrap(), Some(18), "a listed upload stays");
        let left: Vec<_> = std::fs::read_dir(context.store.attachments_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(left, [hex::encode(listed)]);
    }
}
