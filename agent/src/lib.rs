//! `clustermgr-agent`: the daemon on every Gluu, load-balancer and cache host. It
//! answers the controller over mutual-TLS QUIC: host facts, commands, certificate
//! renewal, and replacing its own binary. Later issues add file apply, service control, logs, metrics and probes.
//!
//! Architecture invariant: only this crate touches the node's files and processes; it
//! never dials the controller or other agents.

pub mod apply;
mod budget;
pub mod config;
pub mod enroll;
mod error;
mod exec;
pub mod health;
mod info;
mod journal;
pub mod ldap;
mod newest_controller;
mod server;
mod sys;
pub mod telemetry;
mod uninstall;
pub mod upgrade;

pub use error::AgentError;
pub use server::{Agent, AgentHandle};
