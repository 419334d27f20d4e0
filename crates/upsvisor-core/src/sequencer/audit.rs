//! The audit stream and the status shown while an episode runs.

#[allow(unused_imports)]
use super::*;

/// One line of the audit stream.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct AuditEntry {
    /// When.
    pub at: Instant,
    /// Episode number; 0 for a line outside any episode (a disarmed
    /// controller's note).
    pub episode: u64,
    /// What.
    #[cfg_attr(feature = "serde", serde(flatten))]
    pub what: Audit,
}

/// What an audit line records.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case", tag = "audit"))]
#[non_exhaustive]
pub enum Audit {
    /// An episode began.
    EpisodeStarted {
        /// Why.
        reason: String,
        /// Hosts in scope.
        scope: Vec<HostId>,
        /// Full shutdown (false: load shedding only).
        full: bool,
    },
    /// The episode moved to a new phase.
    Phase {
        /// Phase name.
        phase: String,
    },
    /// A command was issued.
    Issued {
        /// Command id.
        id: u64,
        /// Command.
        cmd: Command,
    },
    /// A command finished.
    Completed {
        /// Command id.
        id: u64,
        /// Command.
        cmd: Command,
        /// `None` for success, else the error.
        error: Option<String>,
    },
    /// Something worth a person's attention.
    Note {
        /// Text.
        text: String,
    },
    /// A host shut down with VMs still on, past the forced deadline.
    ForcedHostShutdown {
        /// Host.
        host: HostId,
        /// Why.
        reason: String,
    },
    /// Power is cut (final device action) while a host in scope still
    /// answers: its shutdown failed, was refused, or it did not go down
    /// within its deadline. Logged before the device command is sent.
    ForcedPowerCut {
        /// Host.
        host: HostId,
        /// Why.
        reason: String,
    },
    /// The episode ended.
    EpisodeEnded {
        /// How.
        outcome: String,
    },
}

/// Where an episode stands, for display.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct EpisodeStatus {
    /// Episode number.
    pub id: u64,
    /// Phase name.
    pub phase: String,
    /// Past the commit point.
    pub committed: bool,
    /// VMs tracked / stopped / to restore.
    pub vms: usize,
    /// VMs this episode stopped.
    pub stopped: usize,
    /// Commands in flight.
    pub in_flight: usize,
}
