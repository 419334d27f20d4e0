//! The codec error.

/// What is wrong with a reply from the UPS.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplyError {
    /// A reply line longer than the limit.
    #[error("reply longer than {max} bytes")]
    TooLong {
        /// The limit.
        max: usize,
    },
    /// A reply that does not have the expected shape.
    #[error("malformed reply: {0}")]
    Malformed(String),
    /// The UPS echoed the command back: Megatec devices do that with
    /// commands they do not know.
    #[error("the UPS echoed the command (not supported)")]
    Echo,
    /// The UPS refused the command (`(NAK`, or APC `NO`).
    #[error("the UPS refused the command")]
    Refused,
    /// APC `NA`: not available on this model or in this state.
    #[error("not available (NA)")]
    NotAvailable,
}

/// A short printable rendering of raw bytes for error messages.
pub(crate) fn show(bytes: &[u8]) -> String {
    let mut s: String = bytes
        .iter()
        .take(48)
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                char::from(b).to_string()
            } else {
                format!("\\x{b:02x}")
            }
        })
        .collect();
    if bytes.len() > 48 {
        s.push('…');
    }
    s
}
