//! The hook runner: how the engine runs a configured [`crate::Hook`].
//!
//! The sequencer decides when a hook starts, how long it is waited for and
//! what its failure holds (see [`crate::Hook`]); the embedder decides what
//! a hook name runs and where (a local program, a command over a host's SSH
//! connection, a function), by registering a [`HookRunner`] with
//! [`crate::Engine::with_hook_runner`]. An engine whose configuration has
//! hooks and no runner is refused by [`crate::Engine::validate`].

use std::time::Duration;

use crate::Result;
use crate::sequencer::config::HookPoint;

/// One hook to run, as the engine hands it to the [`HookRunner`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HookCall {
    /// The hook's configured name.
    pub name: String,
    /// Where in the outage it runs.
    pub point: HookPoint,
    /// The episode it runs in (0: outside any, an on-battery hook before a
    /// trigger).
    pub episode: u64,
    /// How long the engine waits for its result: the engine drops the
    /// future returned by [`HookRunner::run`] at this deadline (the runner
    /// must then stop what it started, e.g. kill its process) and reports
    /// a timeout, which the sequencer counts as a failure.
    pub deadline: Duration,
}

impl HookCall {
    /// A call (for runners' own tests).
    pub fn new(
        name: impl Into<String>,
        point: HookPoint,
        episode: u64,
        deadline: Duration,
    ) -> Self {
        HookCall {
            name: name.into(),
            point,
            episode,
            deadline,
        }
    }
}

/// Runs hooks by name. Object safe; `Send + Sync`, like the transports.
///
/// ```
/// use upsvisor_core::{HookCall, HookRunner, Result};
///
/// struct Log;
/// #[async_trait::async_trait]
/// impl HookRunner for Log {
///     async fn run(&self, call: &HookCall) -> Result<()> {
///         println!("hook {} at {}", call.name, call.point);
///         Ok(())
///     }
/// }
/// let _: std::sync::Arc<dyn HookRunner> = std::sync::Arc::new(Log);
/// ```
#[async_trait::async_trait]
pub trait HookRunner: Send + Sync {
    /// Runs the hook `call.name`. `Ok(())` only when it succeeded (a
    /// program: exit status 0); any error is a failure, with its reason.
    /// Dropping the future must stop the hook (see [`HookCall::deadline`]).
    ///
    /// # Errors
    /// Why the hook failed: not started (`Config`, `NotFound`), ran and
    /// failed (`Platform` with the exit status), or its peer was
    /// unreachable.
    async fn run(&self, call: &HookCall) -> Result<()>;
}
