//! The one error type every adapter maps into.

use std::fmt;
use std::time::Duration;

/// What kind of failure an [`Error`] is: the engine acts on this, not on text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum ErrorKind {
    /// The peer could not be reached, so the request was certainly not
    /// delivered: connection refused, no route, DNS, a reset before the
    /// request was written. The engine resends such a command; a failure
    /// after the request was written (a reset mid-call) may have been
    /// delivered and is [`ErrorKind::Timeout`]'s case.
    Unreachable,
    /// The peer did not answer within its deadline, or the call failed
    /// after the request was sent: it may have been delivered, so the
    /// engine does not resend it.
    Timeout,
    /// Credentials were refused, or the account lacks a privilege.
    Auth,
    /// The VM, host, UPS or outlet named does not exist there.
    NotFound,
    /// The peer or the adapter cannot do this (read-only licence, missing
    /// command, capability absent).
    Unsupported,
    /// The object is not in a state that allows the operation.
    InvalidState,
    /// The peer answered with something that does not parse or breaks the
    /// protocol (garbage, truncated, oversized).
    Protocol,
    /// A guest operation needs guest tools that are not running.
    ToolsUnavailable,
    /// The configuration is wrong; the message names where.
    Config,
}

/// The error every [`HostTransport`](crate::HostTransport) and
/// [`PowerDevice`](crate::PowerDevice) returns.
///
/// Messages name the peer and what failed, never a credential: adapters
/// build them from addresses, ids and the peer's own fault text only.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// See [`ErrorKind::Unreachable`].
    Unreachable {
        /// The peer (address or id).
        target: String,
        /// What the network layer said.
        detail: String,
    },
    /// See [`ErrorKind::Timeout`].
    Timeout {
        /// The operation that timed out.
        what: String,
        /// The deadline it was given.
        after: Duration,
    },
    /// See [`ErrorKind::Auth`].
    Auth {
        /// The peer.
        target: String,
        /// What was refused (never the credential itself).
        detail: String,
    },
    /// See [`ErrorKind::NotFound`].
    NotFound {
        /// What was looked for.
        what: String,
    },
    /// See [`ErrorKind::Unsupported`].
    Unsupported {
        /// What cannot be done, and where possible what to use instead.
        what: String,
    },
    /// See [`ErrorKind::InvalidState`].
    InvalidState {
        /// The state found and the operation refused.
        detail: String,
    },
    /// See [`ErrorKind::Protocol`].
    Protocol {
        /// The peer.
        target: String,
        /// What was wrong with its answer.
        detail: String,
    },
    /// See [`ErrorKind::ToolsUnavailable`].
    ToolsUnavailable {
        /// The VM.
        vm: String,
    },
    /// See [`ErrorKind::Config`].
    Config {
        /// Where in the configuration (file and key path).
        path: String,
        /// What is wrong and how to fix it.
        detail: String,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Unreachable { target, detail } => {
                write!(f, "{target} is unreachable: {detail}")
            }
            Error::Timeout { what, after } => {
                write!(f, "{what} timed out after {}", fmt_duration(*after))
            }
            Error::Auth { target, detail } => {
                write!(f, "authentication failed at {target}: {detail}")
            }
            Error::NotFound { what } => write!(f, "not found: {what}"),
            Error::Unsupported { what } => write!(f, "unsupported: {what}"),
            Error::InvalidState { detail } => write!(f, "invalid state: {detail}"),
            Error::Protocol { target, detail } => {
                write!(f, "protocol error from {target}: {detail}")
            }
            Error::ToolsUnavailable { vm } => write!(f, "guest tools are not running in {vm}"),
            Error::Config { path, detail } => {
                write!(f, "configuration error at {path}: {detail}")
            }
        }
    }
}

// Display by hand rather than thiserror's derive: nine fixed messages do not
// justify two more crates (and a proc-macro) in the tree every vendor links.
impl std::error::Error for Error {}

fn fmt_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

impl Error {
    /// The kind the engine acts on.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Unreachable { .. } => ErrorKind::Unreachable,
            Error::Timeout { .. } => ErrorKind::Timeout,
            Error::Auth { .. } => ErrorKind::Auth,
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::Unsupported { .. } => ErrorKind::Unsupported,
            Error::InvalidState { .. } => ErrorKind::InvalidState,
            Error::Protocol { .. } => ErrorKind::Protocol,
            Error::ToolsUnavailable { .. } => ErrorKind::ToolsUnavailable,
            Error::Config { .. } => ErrorKind::Config,
        }
    }

    /// Whether trying again later may succeed without anyone changing
    /// anything (network trouble, timeouts). Auth, config and protocol
    /// failures are not transient: retrying them only hides the problem.
    pub fn is_transient(&self) -> bool {
        matches!(self.kind(), ErrorKind::Unreachable | ErrorKind::Timeout)
    }

    /// Shorthand for [`Error::Unreachable`].
    pub fn unreachable(target: impl Into<String>, detail: impl ToString) -> Self {
        Error::Unreachable {
            target: target.into(),
            detail: detail.to_string(),
        }
    }

    /// Shorthand for [`Error::Timeout`].
    pub fn timeout(what: impl Into<String>, after: Duration) -> Self {
        Error::Timeout {
            what: what.into(),
            after,
        }
    }

    /// Shorthand for [`Error::Auth`].
    pub fn auth(target: impl Into<String>, detail: impl ToString) -> Self {
        Error::Auth {
            target: target.into(),
            detail: detail.to_string(),
        }
    }

    /// Shorthand for [`Error::NotFound`].
    pub fn not_found(what: impl Into<String>) -> Self {
        Error::NotFound { what: what.into() }
    }

    /// Shorthand for [`Error::Unsupported`].
    pub fn unsupported(what: impl Into<String>) -> Self {
        Error::Unsupported { what: what.into() }
    }

    /// Shorthand for [`Error::InvalidState`].
    pub fn invalid_state(detail: impl Into<String>) -> Self {
        Error::InvalidState {
            detail: detail.into(),
        }
    }

    /// Shorthand for [`Error::Protocol`].
    pub fn protocol(target: impl Into<String>, detail: impl ToString) -> Self {
        Error::Protocol {
            target: target.into(),
            detail: detail.to_string(),
        }
    }

    /// Shorthand for [`Error::ToolsUnavailable`].
    pub fn tools_unavailable(vm: impl Into<String>) -> Self {
        Error::ToolsUnavailable { vm: vm.into() }
    }

    /// Shorthand for [`Error::Config`].
    pub fn config(path: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::Config {
            path: path.into(),
            detail: detail.into(),
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_transience() {
        let e = Error::timeout("list VMs on esx1", Duration::from_secs(5));
        assert_eq!(e.kind(), ErrorKind::Timeout);
        assert!(e.is_transient());
        assert_eq!(e.to_string(), "list VMs on esx1 timed out after 5s");
        let e = Error::auth("esx1", "login refused");
        assert!(!e.is_transient());
        assert_eq!(e.kind(), ErrorKind::Auth);
        assert_eq!(
            Error::timeout("x", Duration::from_millis(1500)).to_string(),
            "x timed out after 1500ms"
        );
    }
}
