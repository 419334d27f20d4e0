//! The engine's log lines, through `tracing` when the `tracing` feature is
//! on, and compiled out otherwise (a firmware build links no logger).
//!
//! Call sites write `logging::warn!(..)` with `tracing`'s syntax. Without
//! the feature the macros expand to `()` and their arguments are not
//! compiled, so a value computed only for a log line shows up as unused:
//! such values are computed inside the macro call, never beside it.

// Which levels are used depends on the features (`error` is the
// journal's): the lists, not the call sites, allow an unused one.
#[cfg(feature = "tracing")]
#[allow(unused_imports)]
pub(crate) use tracing::{debug, error, info, trace, warn};

#[cfg(not(feature = "tracing"))]
macro_rules! off {
    ($($t:tt)*) => {
        ()
    };
}

#[cfg(not(feature = "tracing"))]
#[allow(unused_imports)]
pub(crate) use {off as debug, off as error, off as info, off as trace, off as warn};
