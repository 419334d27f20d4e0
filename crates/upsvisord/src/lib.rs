//! # upsvisord
//!
//! The reference daemon and CLI for upsvisor, and the example of how to
//! embed the library: a strictly parsed, versioned TOML config
//! ([`config`]), the adapters built from it ([`build`]), the engine on its
//! own thread with a shared snapshot ([`runtime`]), and the HTTP API with
//! its web page ([`api`]), and NUT server mode for NUT clients following
//! the daemon ([`nut_server`]).
//!
//! The core is runtime-free; the daemon brings tokio only for the HTTP
//! server (axum). The engine itself runs on a plain thread under
//! `futures::executor::block_on` (real config, wall clock) or
//! `SimClock::block_on` (demo and drills), exactly as an embedder without
//! tokio would run it.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod build;
pub mod config;
pub mod history;
pub mod hooks;
pub mod identity;
pub mod notify;
pub mod nut_server;
pub mod poweron;
pub mod registry;
pub mod render;
pub mod runtime;
pub mod serve;
pub mod service;
pub mod tls;
pub mod webhook;
