//! # custos-agent
//!
//! `custos agent --config agent.toml`: the sidecar that gives a Network Function its SBA
//! certificate without a human. It logs in with any Custos auth method (AppRole, JWT/OIDC,
//! Kubernetes, a client certificate, or a token file), keeps the token fresh (and optionally
//! in a file sink), and for every `[[certificate]]` block:
//!
//! * reuses the files on disk if they are still valid and match the configuration;
//! * otherwise issues (server-side key) or signs (key generated here, never sent) a
//!   certificate, and renders cert, key, chain, CA and bundle files atomically
//!   ([`render`]);
//! * runs the block's reload command with a timeout and logs its outcome;
//! * renews at a fraction of the lifetime, spread per instance and at random ([`schedule`]);
//! * while Custos is unreachable, backs off exponentially to a cap, keeps the last
//!   certificate in place, and logs louder as expiry nears.
//!
//! A health and Prometheus metrics endpoint reports certificate expiry and counts of
//! renewals and failures. SIGTERM/SIGINT stop it after any render in progress completes.
//!
//! Pure logic lives in [`config`] and [`schedule`]; [`render`] does file I/O and [`run`]
//! network I/O.
#![forbid(unsafe_code)]

pub mod attest;
#[cfg(feature = "tpm")]
mod attestation;
pub mod config;
mod metrics;
pub mod render;
mod revocation;
mod runtime;
pub mod schedule;

pub use runtime::{run, AgentError, Metrics};
