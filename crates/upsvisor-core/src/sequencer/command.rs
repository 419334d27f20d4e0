//! What the sequencer asks its driver to run.

#[allow(unused_imports)]
use super::*;

/// A command for the driver to run.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case", tag = "kind"))]
#[non_exhaustive]
pub enum Command {
    /// A VM power operation on the host the VM is on now.
    Vm {
        /// Host.
        host: HostId,
        /// VM.
        vm: VmId,
        /// VM name (for people).
        name: String,
        /// Operation.
        op: VmOp,
    },
    /// A host power operation.
    Host {
        /// Host.
        host: HostId,
        /// Operation.
        op: HostOp,
    },
    /// A power-device command.
    Device {
        /// Device.
        device: DeviceId,
        /// Command.
        cmd: DeviceCommand,
    },
    /// Every host this device feeds in the episode is down: stop holding
    /// its other clients back ([`crate::PowerDevice::detach`]; NUT:
    /// `LOGOUT`, so a primary `upsmon` waiting in `FSD` for its secondaries
    /// goes ahead).
    Detach {
        /// Device.
        device: DeviceId,
    },
    /// Run a configured hook ([`crate::HookRunner::run`]); its result is
    /// due by `deadline` (the sequencer counts no result by then as a
    /// failure).
    Hook {
        /// The hook's name ([`super::config::Hook::name`]).
        hook: String,
        /// Where it runs.
        point: super::config::HookPoint,
        /// Its episode (0 outside any: an on-battery hook before a trigger).
        episode: u64,
        /// How long its result is waited for.
        #[cfg_attr(feature = "serde", serde(with = "super::config::secs"))]
        deadline: Duration,
    },
    /// The restore is done: be counted again
    /// ([`crate::PowerDevice::attach`]; NUT: `LOGIN`).
    Attach {
        /// Device.
        device: DeviceId,
    },
}

impl Command {
    /// The host a command goes to, if any.
    pub fn host(&self) -> Option<&HostId> {
        match self {
            Command::Vm { host, .. } | Command::Host { host, .. } => Some(host),
            Command::Device { .. }
            | Command::Detach { .. }
            | Command::Attach { .. }
            | Command::Hook { .. } => None,
        }
    }
}

/// A command with the id its result is reported under.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Issued {
    /// Id.
    pub id: u64,
    /// The command.
    pub cmd: Command,
}
