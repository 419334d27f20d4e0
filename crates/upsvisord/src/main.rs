//! The `upsvisord` binary.
fn main() {}
