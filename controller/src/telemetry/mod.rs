//! Telemetry on the controller: the on-disk encodings of the telemetry store.

pub mod gorilla;
