//! The clustermgr controller: the cluster CA, the inventory store, connections to the
//! agents, the operations the CLI offers, `serve` and the `dev` sandbox.
//!
//! Architecture invariants: every command that acts on the cluster runs as operations
//! through [`ops::run`], either in-process or through `serve`'s local socket, and the
//! CLI renders the same [`ops::Event`]s and [`ops::Report`]s either way, with `--json`
//! from [`contract`]. What a command does around its operations in the front (making
//! a home, sealing a backup, an SSH session, repeating a round) and why is in
//! ARCHITECTURE.md ("Commands that are more than one operation").
//! Only [`store`] knows redb, only [`ca`] signs, only [`connect`] dials agents.
#![forbid(unsafe_code)]

pub mod accept;
pub mod access;
pub mod archive;
pub mod backup;
pub mod binary;
pub mod bootstrap;
pub mod ca;
pub mod cli;
pub mod clock;
pub mod config;
pub mod connect;
pub mod contract;
pub mod ctx;
pub mod desired;
pub mod dev;
pub mod elf;
mod error;
pub mod exit;
pub mod generate;
pub mod health;
pub mod healthlog;
pub mod home;
pub mod http;
pub mod inventory;
pub mod keymatch;
pub mod local;
pub mod model;
pub mod ops;
pub mod passphrase;
pub mod password;
pub mod recent;
pub mod render;
pub mod selector;
pub mod serve;
pub mod store;
pub mod suggest;
pub mod telemetry;
pub mod telemetry_store;
pub mod terminal;
mod upgrade;
pub mod users;
pub mod web;
pub mod words;

pub use error::CtlError;
