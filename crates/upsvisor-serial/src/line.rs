//! Splitting a serial byte stream into reply lines, with a length limit.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use crate::error::ReplyError;

/// Collects bytes until a terminator; refuses lines over a limit.
///
/// Megatec replies end in `\r`; APC smart replies in `\r\n`. Both are
/// handled by splitting on `terminator` and dropping any `\r`/`\n` left at
/// either end of the line.
#[derive(Debug, Clone)]
pub struct LineReader {
    buf: Vec<u8>,
    max: usize,
    terminator: u8,
}

impl LineReader {
    /// A reader splitting on `terminator`, refusing lines over `max` bytes.
    pub fn new(terminator: u8, max: usize) -> Self {
        LineReader {
            buf: Vec::new(),
            max,
            terminator,
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes held that do not form a line yet.
    pub fn pending(&self) -> &[u8] {
        &self.buf
    }

    /// Drops everything held.
    pub fn clear(&mut self) {
        self.buf.clear();
    }

    /// The next complete, non-empty line without its terminator.
    pub fn next_line(&mut self) -> Result<Option<Vec<u8>>, ReplyError> {
        loop {
            let Some(pos) = self.buf.iter().position(|&b| b == self.terminator) else {
                if self.buf.len() > self.max {
                    return Err(ReplyError::TooLong { max: self.max });
                }
                return Ok(None);
            };
            if pos > self.max {
                return Err(ReplyError::TooLong { max: self.max });
            }
            let mut line: Vec<u8> = self.buf.drain(..=pos).collect();
            line.pop();
            while line.last().is_some_and(|b| *b == b'\r' || *b == b'\n') {
                line.pop();
            }
            let start = line
                .iter()
                .position(|b| *b != b'\r' && *b != b'\n')
                .unwrap_or(line.len());
            line.drain(..start);
            if !line.is_empty() {
                return Ok(Some(line));
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn arbitrary_chunks_never_panic_and_stay_bounded(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..16),
            term in prop_oneof![Just(b'\r'), Just(b'\n')],
        ) {
            let mut r = LineReader::new(term, 32);
            for c in &chunks {
                r.push(c);
                loop {
                    match r.next_line() {
                        Ok(Some(line)) => prop_assert!(line.len() <= 32 && !line.is_empty()),
                        Ok(None) => break,
                        Err(_) => { r.clear(); break; }
                    }
                }
                prop_assert!(r.pending().len() <= 32 + 64);
            }
        }
    }

    #[test]
    fn splits_and_limits() {
        let mut r = LineReader::new(b'\r', 8);
        r.push(b"(1 2\r\n\r(3");
        assert_eq!(r.next_line().unwrap(), Some(b"(1 2".to_vec()));
        assert_eq!(r.next_line().unwrap(), None);
        assert_eq!(r.pending(), b"(3");
        r.push(b"\r");
        assert_eq!(r.next_line().unwrap(), Some(b"(3".to_vec()));
        r.push(b"123456789");
        assert_eq!(r.next_line(), Err(ReplyError::TooLong { max: 8 }));
        let mut r = LineReader::new(b'\n', 8);
        r.push(b"SM\r\n08\r\n");
        assert_eq!(r.next_line().unwrap(), Some(b"SM".to_vec()));
        assert_eq!(r.next_line().unwrap(), Some(b"08".to_vec()));
        assert_eq!(r.next_line().unwrap(), None);
    }
}
