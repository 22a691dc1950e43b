//! Who may do what on the desk API: the roles of docs/design.md, bound to client identities in the
//! node config, and the one table that says which role may call which RPC.

use serde::{Deserialize, Serialize};

/// A desk client's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A 24/7 desk officer: submit, read, acknowledge, respond, close a case.
    Officer,
    /// An operator: read everything, requeue, cancel, see queues and peers, take backups.
    Operator,
    /// A partner agency's system: submit, and read only what it submitted.
    Agency,
    /// An auditor: reads the audit log (`ListAudit`) and the statistics; no other desk calls.
    Auditor,
}

impl Role {
    /// The role's name as in the config.
    pub fn name(self) -> &'static str {
        match self {
            Role::Officer => "officer",
            Role::Operator => "operator",
            Role::Agency => "agency",
            Role::Auditor => "auditor",
        }
    }
}

/// A desk RPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Action {
    Submit,
    Get,
    ListInbox,
    ListOutbox,
    Acknowledge,
    DisputePrecedence,
    Respond,
    Cancel,
    Requeue,
    Watch,
    GetQueue,
    ListPeers,
    ListAudit,
    Backup,
    GetStatistics,
    RecoverFromPeers,
    UploadAttachment,
    DownloadAttachment,
    CloseCase,
    ListPreservations,
}

/// What a caller may see when it may call at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every message.
    All,
    /// Only the messages this client submitted, and the envelopes that answer them.
    OwnSubmissions,
}

/// The access table: `None` when `role` may not call `action`.
pub fn scope(role: Role, action: Action) -> Option<Scope> {
    use Action as A;
    match (role, action) {
        (
            Role::Officer,
            A::Submit
            | A::Get
            | A::ListInbox
            | A::ListOutbox
            | A::Acknowledge
            | A::DisputePrecedence
            | A::Respond
            | A::Watch
            | A::UploadAttachment
            | A::DownloadAttachment
            | A::CloseCase
            | A::ListPreservations,
        ) => Some(Scope::All),
        (
            Role::Operator,
            A::Get
            | A::ListInbox
            | A::ListOutbox
            | A::Cancel
            | A::Requeue
            | A::Watch
            | A::GetQueue
            | A::ListPeers
            | A::Backup
            | A::GetStatistics
            | A::RecoverFromPeers
            | A::DownloadAttachment
            | A::ListPreservations,
        ) => Some(Scope::All),
        // Not `CloseCase`: closing starts the clock that removes a case's content at this node,
        // the State's decision (its 24/7 officers), and a case holds the peer's replies too.
        (
            Role::Agency,
            A::Submit
            | A::Get
            | A::ListOutbox
            | A::Watch
            | A::UploadAttachment
            | A::DownloadAttachment
            | A::ListPreservations,
        ) => Some(Scope::OwnSubmissions),
        // Only the auditor: whoever runs the node (the operator) is among those it checks.
        // Counts and times, never content: the network's reporting is theirs to check.
        (Role::Auditor, A::ListAudit | A::GetStatistics) => Some(Scope::All),
        _ => None,
    }
}

/// A desk client that may make the call it is making.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The client name from its certificate.
    pub name: String,
    /// Its role from the node config.
    pub role: Role,
    /// What it may see.
    pub scope: Scope,
}

impl Caller {
    /// Whether this caller may see a message submitted by `submitted_by` (empty for messages no
    /// desk client submitted: received ones and replies this node made).
    pub fn may_see(&self, submitted_by: &str) -> bool {
        match self.scope {
            Scope::All => true,
            Scope::OwnSubmissions => submitted_by == self.name,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_of_design_md() {
        use Action as A;
        let every = [
            A::Submit,
            A::Get,
            A::ListInbox,
            A::ListOutbox,
            A::Acknowledge,
            A::DisputePrecedence,
            A::Respond,
            A::Cancel,
            A::Requeue,
            A::Watch,
            A::GetQueue,
            A::ListPeers,
            A::ListAudit,
            A::Backup,
            A::GetStatistics,
            A::RecoverFromPeers,
            A::UploadAttachment,
            A::DownloadAttachment,
            A::CloseCase,
            A::ListPreservations,
        ];
        let allowed = |role| every.iter().filter(|a| scope(role, **a).is_some()).count();
        assert_eq!(allowed(Role::Officer), 12);
        assert_eq!(allowed(Role::Operator), 13);
        assert_eq!(allowed(Role::Agency), 7);
        assert_eq!(scope(Role::Operator, A::UploadAttachment), None, "operators do not send");
        assert_eq!(allowed(Role::Auditor), 2);
        assert_eq!(scope(Role::Operator, A::ListAudit), None);
        assert_eq!(scope(Role::Agency, A::Get), Some(Scope::OwnSubmissions));
        assert_eq!(scope(Role::Operator, A::Submit), None);
        assert_eq!(scope(Role::Officer, A::Cancel), None);
        assert_eq!(scope(Role::Officer, A::Backup), None, "a backup holds every case: operators only");
        assert_eq!(scope(Role::Officer, A::CloseCase), Some(Scope::All));
        assert_eq!(scope(Role::Agency, A::CloseCase), None, "closing a case is the State's decision");
        assert_eq!(scope(Role::Operator, A::CloseCase), None);
    }
}
