//! Shared test helpers.
#![allow(dead_code)]

pub mod nut;
#[path = "../../../upsvisor-ssh/tests/harness/mod.rs"]
pub mod ssh;
