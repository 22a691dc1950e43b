//! Retention: once an hour (`[retention] interval`) the events older than `[retention] events`
//! (30 days) are removed, oldest first, in bounded steps, each with an audit record; the content
//! of cases closed more than `[retention] closed_content` (365 days) ago is removed
//! (`domain::closing` says what goes), each envelope's removal an audit record; and uploaded
//! attachments that no message lists are removed `[retention] uploads` after their upload.
//! Messages (ids, states, times, digests, receipts, signatures) and the audit log are never
//! removed here.
//!
//! Attachment files: when a closed case's content goes, the store drops the envelope's
//! references to its attachments in the same write, so the files no other message lists are
//! removed with the unused uploads in the same pass.
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
        remove_closed_content(&context, &stop).await;
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

/// Closed cases handled per pass step, so one step stays small.
const CASES_PER_STEP: usize = 100;

/// One pass: removes the content of every case closed before the retention period.
async fn remove_closed_content(context: &Arc<NodeContext>, stop: &CancellationToken) {
    let keep = context.config.retention.closed_content;
    let now = context.clock.now();
    let Some(before) = now.checked_sub(keep) else { return };
    let why = format!(
        "case closed more than {} ago ([retention] closed_content)",
        humantime::format_duration(keep)
    );
    let store = context.store.clone();
    let due = match tokio::task::spawn_blocking(move || store.closed_cases_due(before, CASES_PER_STEP)).await
    {
        Ok(Ok(due)) => due,
        Ok(Err(error)) => {
            tracing::warn!(%error, "closed cases could not be read; trying again at the next interval");
            return;
        }
        Err(error) => {
            tracing::warn!(%error, "the closed-case retention task failed; trying again at the next interval");
            return;
        }
    };
    for (first, closed_at) in due {
        if stop.is_cancelled() {
            return;
        }
        let store = context.store.clone();
        let reason = why.clone();
        let removed = tokio::task::spawn_blocking(move || {
            store.remove_case_content(first, closed_at, now, &reason, crate::trust::signing::envelope_digest)
        })
        .await;
        match removed {
            Ok(Ok(done)) => {
                if let Err(error) = context.store.persist().await {
                    tracing::warn!(%error, "removing a closed case's content is not durable yet");
                }
                tracing::info!(case = %first, removed = done.ids.len(), waiting = done.waiting, "closed case content removed");
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, case = %first, "a closed case's content could not be removed; trying again at the next interval");
            }
            Err(error) => {
                tracing::warn!(%error, "the closed-case retention task failed; trying again at the next interval");
            }
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
    use crate::store::view;

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

    /// Stores a request in `state` made at `at` that lists the attachments `digests`; returns its
    /// id.
    fn store_listing(
        context: &NodeContext,
        state: MessageState,
        at: SystemTime,
        digests: &[[u8; 32]],
    ) -> uuid::Uuid {
        let made = testing::store_request(context, state, at, at + Duration::from_secs(800 * 86_400));
        // Only a first store references attachments, so list them from a second message made
        // like the first.
        let mut stored = context.store.get(made).unwrap().unwrap();
        let id = uuid::Uuid::now_v7();
        let envelope = stored.message.as_mut().unwrap().envelope.as_mut().unwrap();
        envelope.id = id.to_string();
        for digest in digests {
            envelope.attachments.push(crate::proto::Attachment {
                name: "a.txt".into(),
                media_type: "text/plain".into(),
                size_bytes: 18,
                sha256: digest.to_vec(),
            });
        }
        context
            .store
            .write(|changes| {
                stored.seq = changes.next_seq()?;
                changes.put(stored)
            })
            .unwrap();
        id
    }

    #[tokio::test]
    async fn an_upload_no_message_lists_is_removed_after_the_grace_period_and_a_listed_one_stays() {
        let start = SystemTime::now();
        let manual = Clock::manual(start);
        let (_dir, context) = testing::context(manual.clock()).await;
        let unused = upload(&context, b"nobody lists me", start);
        let listed = upload(&context, b"a message lists me", start);
        store_listing(&context, MessageState::Queued, start, &[listed]);
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

    #[tokio::test]
    async fn the_files_of_a_closed_case_go_with_its_content_unless_another_message_lists_them() {
        let start = SystemTime::now();
        let manual = Clock::manual(start);
        let (_dir, context) = testing::context(manual.clock()).await;
        let own = upload(&context, b"only the case lists me", start);
        let shared = upload(&context, b"another message too", start);
        let case = store_listing(&context, MessageState::Received, start, &[own, shared]);
        store_listing(&context, MessageState::Received, start, &[shared]);
        close(&context, case, start);
        let stop = CancellationToken::new();

        manual.advance(context.config.retention.closed_content + Duration::from_secs(1));
        remove_closed_content(&context, &stop).await;
        remove_unused_uploads(&context).await;
        assert_eq!(context.store.attachment_size(&own).unwrap(), None, "removed with the content");
        assert!(context.store.attachment_size(&shared).unwrap().is_some(), "still listed elsewhere");
        let message = context.store.get(case).unwrap().unwrap().message.unwrap();
        assert!(message.content_removed.iter().any(|f| f == crate::domain::closing::ATTACHMENT_CONTENT));
        let envelope = message.envelope.unwrap();
        assert_eq!(envelope.attachments.len(), 2, "sizes and digests stay");
        assert!(envelope.attachments.iter().all(|a| a.name.is_empty()));
    }

    /// Stores an envelope from FR answering or continuing `parent`, with a body; returns its id.
    fn store_reply(
        context: &NodeContext,
        parent: uuid::Uuid,
        kind: crate::proto::EnvelopeKind,
    ) -> uuid::Uuid {
        let id = uuid::Uuid::now_v7();
        let at = crate::domain::timestamp::now();
        let envelope = crate::proto::Envelope {
            id: id.to_string(),
            origin: "FR".into(),
            destination: "VN".into(),
            kind: kind as i32,
            in_reply_to: parent.to_string(),
            body: "a reply naming a witness".into(),
            created_at: Some(at),
            ..Default::default()
        };
        let mut message = crate::proto::Message {
            envelope: Some(envelope),
            direction: crate::proto::Direction::Inbound as i32,
            ..Default::default()
        };
        crate::domain::lifecycle::enter(&mut message, MessageState::Received, at, "test".into());
        context
            .store
            .write(|changes| {
                let seq = changes.next_seq()?;
                changes.put(crate::store_proto::StoredMessage {
                    message: Some(message),
                    seq,
                    ..Default::default()
                })
            })
            .unwrap();
        id
    }

    /// Marks `id` closed at `at` as `CloseCase` does, the case's key under `first`.
    fn close_in(context: &NodeContext, first: uuid::Uuid, id: uuid::Uuid, at: SystemTime) {
        context
            .store
            .write(|changes| {
                let mut stored = changes.get(id)?.unwrap();
                stored.message.as_mut().unwrap().closed_at = Some(crate::domain::timestamp::from_system(at));
                changes.put(stored)?;
                changes.mark_case_closed(first, at);
                Ok::<_, crate::store::StoreError>(())
            })
            .unwrap();
    }

    #[tokio::test]
    async fn replies_that_join_a_closed_case_go_with_it_and_a_follow_up_waits_for_its_own_closing() {
        use crate::proto::EnvelopeKind;
        let start = SystemTime::now();
        let manual = Clock::manual(start);
        let (_dir, context) = testing::context(manual.clock()).await;
        let far = start + Duration::from_secs(800 * 86_400);
        let first = testing::store_request(&context, MessageState::Received, start, far);
        close(&context, first, start);
        let late_ack = store_reply(&context, first, EnvelopeKind::Acknowledgement);
        let follow_up = store_reply(&context, first, EnvelopeKind::Request);
        let follow_up_ack = store_reply(&context, follow_up, EnvelopeKind::Acknowledgement);
        let removed =
            |id| context.store.get(id).unwrap().unwrap().message.unwrap().content_removed_at.is_some();
        let stop = CancellationToken::new();

        let period = context.config.retention.closed_content + Duration::from_secs(1);
        manual.advance(period);
        remove_closed_content(&context, &stop).await;
        assert!(removed(first) && removed(late_ack), "the case and what joined it");
        assert!(!removed(follow_up) && !removed(follow_up_ack), "an open follow-up and its reply stay");

        // The follow-up closed now: its own period, then it goes too.
        close_in(&context, first, follow_up, manual.now());
        remove_closed_content(&context, &stop).await;
        assert!(!removed(follow_up), "not before its own period");
        manual.advance(period);
        remove_closed_content(&context, &stop).await;
        assert!(removed(follow_up) && removed(follow_up_ack));
        assert!(context.store.closed_cases_due(manual.now(), 10).unwrap().is_empty());
    }

    /// Marks the case of `id` closed at `at` as `CloseCase` does (body and all).
    fn close(context: &NodeContext, id: uuid::Uuid, at: SystemTime) {
        context
            .store
            .write(|changes| {
                let mut stored = changes.get(id)?.unwrap();
                let message = stored.message.as_mut().unwrap();
                message.envelope.as_mut().unwrap().body = "the name of a witness".into();
                message.closed_at = Some(crate::domain::timestamp::from_system(at));
                changes.put(stored)?;
                changes.mark_case_closed(id, at);
                Ok::<_, crate::store::StoreError>(())
            })
            .unwrap();
    }

    #[tokio::test]
    async fn closed_cases_lose_their_content_once_the_period_is_over_and_waiting_ones_keep_it() {
        let start = SystemTime::now();
        let manual = Clock::manual(start);
        let (_dir, context) = testing::context(manual.clock()).await;
        let far = start + Duration::from_secs(800 * 86_400);
        let received = testing::store_request(&context, MessageState::Received, start, far);
        let open = testing::store_request(&context, MessageState::Received, start, far);
        // Closed while still queued (only possible by a store edit): its content must stay.
        let queued = testing::store_request(&context, MessageState::Queued, start, far);
        close(&context, received, start);
        close(&context, queued, start);
        let stop = CancellationToken::new();
        let body = |id| {
            let stored = context.store.get(id).unwrap().unwrap();
            let message = stored.message.unwrap();
            (message.envelope.unwrap().body, message.content_removed_at.is_some())
        };

        remove_closed_content(&context, &stop).await;
        assert_eq!(body(received), ("the name of a witness".into(), false), "not yet");
        // A closed request waits for nobody: never overdue, unlike the open one.
        let overdue: Vec<_> =
            context.store.overdue(far).unwrap().iter().map(|m| view(m).envelope.unwrap().id).collect();
        assert_eq!(overdue, [open.to_string()]);

        manual.advance(context.config.retention.closed_content + Duration::from_secs(1));
        remove_closed_content(&context, &stop).await;
        assert_eq!(body(received), (String::new(), true));
        assert!(!body(open).1, "never closed: kept");
        assert_eq!(body(queued), ("the name of a witness".into(), false), "still to be sent: kept");
        let due = context.store.closed_cases_due(manual.now(), 10).unwrap();
        assert_eq!(
            due.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            [queued],
            "the waiting case is tried again"
        );
        let head = context.store.audit_head().sequence;
        let removals = context.store.audit_records(0, head, usize::MAX).unwrap();
        let removals: Vec<_> = removals.iter().filter(|(_, r)| r.action == "CONTENT_REMOVED").collect();
        assert_eq!(removals.len(), 1);
        assert_eq!(removals[0].1.message_id, received.to_string());
        assert!(removals[0].1.details.starts_with("body: case closed more than"), "{:?}", removals[0].1);

        // A second pass removes nothing twice.
        remove_closed_content(&context, &stop).await;
        let head_after = context.store.audit_head().sequence;
        let again = context.store.audit_records(head, head_after, usize::MAX).unwrap();
        assert!(again.iter().all(|(_, r)| r.action != "CONTENT_REMOVED"), "{again:?}");
    }
}
