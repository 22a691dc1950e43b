//! Who is calling and what the audit log says about it: the one place where a desk client's
//! certificate identity becomes a role (and a refusal), and the audit records of calls and reads.

use super::{Desk, DeskError};
use crate::domain::access::{self, Action, Caller, Role};
use crate::domain::identity::Identity;
use crate::store::Changes;
use crate::store::StoreError;
use crate::store::audit::ChainHead;

impl Desk {
    /// The desk client with certificate identity `identity` (none: no certificate, or one that
    /// names nobody), with its role from the node config; refused unless that role may make
    /// `action` (the access table in `access`). A refusal is recorded in the audit log.
    ///
    /// Every call, allowed or not, first takes one from the caller's call rate
    /// (`limits.desk_calls_per_second`): over it, the call is refused with [`DeskError::Busy`]
    /// saying when to retry.
    pub fn authorize(&self, identity: Option<Identity>, action: Action) -> Result<Caller, DeskError> {
        let who = || match &identity {
            Some(Identity::Client { name, .. }) => {
                let role = self.context.clients.role_of(name).map_or("no role", |role| role.name());
                format!("{name} ({role})")
            }
            Some(other) => other.to_string(),
            None => "no identity".to_owned(),
        };
        let client = match &identity {
            Some(Identity::Client { name, .. }) => name.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        };
        if let Err(wait) = self.rate.take(&client, std::time::Instant::now()) {
            let limits = &self.context.config.limits;
            let error = DeskError::Busy(format!(
                "client '{client}' is over its call rate (limits.desk_calls_per_second = {}, limits.desk_call_burst = {}): retry in {} ms",
                limits.desk_calls_per_second,
                limits.desk_call_burst,
                wait.as_millis().max(1)
            ));
            self.count_limited("rate");
            self.audit_refusal(who(), action, "", &error);
            return Err(error);
        }
        self.caller(identity.as_ref(), action)
            .inspect_err(|error| self.audit_refusal(who(), action, "", error))
    }

    /// Counts a call refused by a client's own bound (`rate`, `streams`) in the node's metrics.
    pub(super) fn count_limited(&self, reason: &str) {
        let labels = crate::runtime::metrics::labels(&[("reason", reason)]);
        self.context.metrics.desk_calls_limited.get_or_create(&labels).inc();
    }

    /// A place for one more stream of `caller` (`Watch`, the console's events), or a refusal
    /// naming `limits.max_streams_per_client`.
    pub(super) fn open_stream(&self, caller: &Caller) -> Result<super::bounds::StreamSlot, DeskError> {
        self.streams.open(&caller.name).ok_or_else(|| {
            self.count_limited("streams");
            let error = DeskError::Busy(format!(
                "client '{}' has {} streams open (limits.max_streams_per_client): end one, then retry",
                caller.name,
                self.streams.cap()
            ));
            self.audit_refusal(audit_who(caller), Action::Watch, "", &error);
            error
        })
    }

    /// The desk client of this node that `identity` names, with its role from the node config
    /// (`None`: not listed under `[[clients]]`); refused if it names no desk client of this
    /// node. [`Desk::authorize`] decides with it; the console shows who is signed in with it.
    pub fn client_role(&self, identity: Option<&Identity>) -> Result<(String, Option<Role>), DeskError> {
        let me = self.context.code();
        match identity {
            Some(Identity::Client { network, node, name })
                if *network == self.context.config.network && *node == me =>
            {
                Ok((name.clone(), self.context.clients.role_of(name)))
            }
            Some(other) => Err(DeskError::Forbidden(format!("{other} is not a desk client of node {me}"))),
            None => Err(DeskError::Forbidden("no client certificate identity".into())),
        }
    }

    /// [`Desk::authorize`] without the audit record.
    fn caller(&self, identity: Option<&Identity>, action: Action) -> Result<Caller, DeskError> {
        let me = self.context.code();
        let (name, role) = self.client_role(identity)?;
        let Some(role) = role else {
            return Err(DeskError::Forbidden(format!(
                "client '{name}' has no role on node {me}: add it under [[clients]] in the node config and reload the node (SIGHUP)"
            )));
        };
        let Some(scope) = access::scope(role, action) else {
            return Err(DeskError::Forbidden(format!(
                "client '{name}' ({}) may not call {action:?}",
                role.name()
            )));
        };
        Ok(Caller { name, role, scope })
    }

    /// Records a refused call. Not waited for: nobody is told anything stored, and the record
    /// becomes durable with the next flush (the next change, or sled's own within a second).
    /// A refusal repeating one already recorded in this interval is only counted (see
    /// [`write_repeats`]).
    pub(super) fn audit_refusal(&self, who: String, action: Action, id: &str, error: &DeskError) {
        let details = format!("REFUSED: {error}");
        if !self.series.note((who.clone(), format!("{action:?}"), id.to_owned(), details.clone())) {
            return;
        }
        let recorded = self.context.store.write(|changes| {
            changes.act_as(who);
            changes.audit(&format!("{action:?}"), id, &details);
            Ok::<_, StoreError>(())
        });
        if let Err(error) = recorded {
            tracing::warn!(%error, "a refused desk call could not be recorded in the audit log");
        }
    }

    /// Records a read in the audit log and makes the record durable before anything is handed
    /// out: a read that cannot be recorded is refused (the store error says why). Returns the
    /// chain head that includes the record.
    ///
    /// A read repeating one already recorded in this interval (the same client, action, message
    /// and details) is only counted, and written with its count when the interval ends
    /// ([`write_repeats`]); the head returned is then the current one.
    pub(super) async fn audit_read(
        &self,
        caller: &Caller,
        action: Action,
        id: &str,
        details: &str,
    ) -> Result<ChainHead, DeskError> {
        let key = (audit_who(caller), format!("{action:?}"), id.to_owned(), details.to_owned());
        if !self.series.note(key) {
            self.context.store.persist().await?;
            return Ok(self.context.store.audit_head());
        }
        let head = self.context.store.write(|changes| {
            audit_call(changes, caller, action, id, details);
            Ok::<_, DeskError>(changes.audit_head())
        })?;
        self.context.store.persist().await?;
        Ok(head)
    }
}

/// Who a desk caller is in the audit log: "<name> (<role>)".
pub(super) fn audit_who(caller: &Caller) -> String {
    format!("{} ({})", caller.name, caller.role.name())
}

/// Names the caller in this operation's audit records and records the call itself (before the
/// state changes it causes, which `Changes::put` records).
pub(super) fn audit_call(
    changes: &mut Changes<'_>,
    caller: &Caller,
    action: Action,
    id: &str,
    details: &str,
) {
    changes.act_as(audit_who(caller));
    changes.audit(&format!("{action:?}"), id, details);
}

/// Writes, at the end of every `limits.audit_aggregation_interval` (and when the node stops),
/// one audit record per series of repeated records with their count: a loop of calls costs at
/// most two records per interval and series, and the chain stays one unbroken chain of
/// ordinary records that `audit verify` checks as always.
pub(super) async fn write_repeats(
    context: std::sync::Arc<crate::runtime::context::NodeContext>,
    series: std::sync::Arc<super::bounds::AuditSeries>,
    stop: tokio_util::sync::CancellationToken,
) {
    let interval = context.config.limits.audit_aggregation_interval;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            () = stop.cancelled() => true,
            _ = tick.tick() => false,
        };
        let repeats = series.take_repeats();
        if !repeats.is_empty() {
            let within = humantime::format_duration(interval);
            let written = context.store.write(|changes| {
                for ((who, action, id, details), count) in &repeats {
                    changes.act_as(who.clone());
                    changes.audit(
                        action,
                        id,
                        &format!("{details} [repeated {count} more times within {within}]"),
                    );
                }
                Ok::<_, StoreError>(())
            });
            let persisted = match written {
                Ok(()) => context.store.persist().await,
                Err(error) => Err(error),
            };
            if let Err(error) = persisted {
                tracing::warn!(%error, series = repeats.len(), "the counts of repeated audit records could not be recorded");
            }
        }
        if stopping {
            return;
        }
    }
}
