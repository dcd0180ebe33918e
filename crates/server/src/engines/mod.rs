//! The engines: each folder is one engine (a secrets engine, a login method or a system
//! engine) behind [`crate::core::engine::Engine`]. An engine may use the core's engine
//! interface, the barrier [`crate::core::barrier::View`] and the narrow services of
//! [`crate::core::services`]; it never imports another engine. The composition root
//! ([`crate::compose`]) builds and registers them.

pub mod auth;
pub mod kv;
pub mod nrf;
pub mod pki;
pub mod provenance;
pub mod tlog;
