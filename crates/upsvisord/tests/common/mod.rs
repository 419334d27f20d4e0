//! Shared test helpers.
#![allow(dead_code)]

pub mod nut;
pub mod ssh;
