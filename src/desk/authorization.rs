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
    pub fn authorize(&self, identity: Option<Identity>, action: Action) -> Result<Caller, DeskError> {
        self.caller(identity.as_ref(), action).inspect_err(|error| {
            let who = match identity {
                Some(Identity::Client { name, .. }) => {
                    let role = self.context.config.role_of(&name).map_or("no role", |role| role.name());
                    format!("{name} ({role})")
                }
                Some(other) => other.to_string(),
                None => "no identity".to_owned(),
            };
            self.audit_refusal(who, action, "", error);
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
                Ok((name.clone(), self.context.config.role_of(name)))
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
                "client '{name}' has no role on node {me}: add it under [[clients]] in the node config"
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
    pub(super) fn audit_refusal(&self, who: String, action: Action, id: &str, error: &DeskError) {
        let recorded = self.context.store.write(|changes| {
            changes.act_as(who);
            changes.audit(&format!("{action:?}"), id, &format!("REFUSED: {error}"));
            Ok::<_, StoreError>(())
        });
        if let Err(error) = recorded {
            tracing::warn!(%error, "a refused desk call could not be recorded in the audit log");
        }
    }

    /// Records a read in the audit log and makes the record durable before anything is handed
    /// out: a read that cannot be recorded is refused (the store error says why). Returns the
    /// chain head that includes the record.
    pub(super) async fn audit_read(
        &self,
        caller: &Caller,
        action: Action,
        id: &str,
        details: &str,
    ) -> Result<ChainHead, DeskError> {
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
