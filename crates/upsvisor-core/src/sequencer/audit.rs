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
    /// A hook was started ([`Command::Hook`]).
    HookStarted {
        /// Its id (its result comes under it).
        id: u64,
        /// Its name.
        hook: String,
        /// Where it runs.
        point: config::HookPoint,
        /// Whether it holds its step while it runs or after it failed.
        blocking: bool,
        /// How long its result is waited for, in seconds.
        deadline_s: u64,
    },
    /// A hook finished: `error` is `None` for success, else why it failed
    /// (no result within its deadline is a failure).
    HookFinished {
        /// Its id.
        id: u64,
        /// Its name.
        hook: String,
        /// `None` for success, else the error.
        error: Option<String>,
    },
    /// A step held by a blocking hook (running or failed) goes on anyway:
    /// the forced deadline passed, or the battery's runtime left only
    /// covers what follows.
    ForcedPastHook {
        /// The hook.
        hook: String,
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
