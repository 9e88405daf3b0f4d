//! `clustermgr-agent`: the daemon on every Gluu, load-balancer and cache host. It
//! answers the controller over mutual-TLS QUIC: host facts, commands, change sets
//! applied all or nothing with their validators and reloads, the logs and metrics it
//! spools, health checks (LDAP, csync2, ports, services, certificates), certificate
//! renewal, and replacing its own binary.
//!
//! Architecture invariant: only this crate touches the node's files and processes; it
//! never dials the controller or other agents. No `unsafe`: the system calls std lacks
//! come through rustix.
#![forbid(unsafe_code)]

pub mod apply;
mod budget;
pub mod cleaner;
pub mod config;
pub mod enroll;
mod error;
mod exec;
pub mod health;
mod info;
mod journal;
pub mod ldap;
mod newest_controller;
pub mod packages;
mod server;
mod sys;
pub mod telemetry;
mod uninstall;
pub mod upgrade;

pub use error::AgentError;
pub use server::{Agent, AgentHandle};
