//! Development and test tooling, kept out of the services' runtime
//! (`conclave-common`): the one way to start a whole stack as processes
//! ([`topology`]), service processes and their logs ([`process`]), test
//! helpers ([`testing`]), and an in-memory OTLP trace collector
//! ([`trace_collector`]).

/// OWT's REST client as the sample application server has it.
pub use conclave_sample::owt_rest;
pub mod devcerts;
pub mod etcd;
pub mod postgres;
pub mod process;
pub mod testing;
pub mod topology;
pub mod trace_collector;

pub use topology::{Options, Topology, TopologyError};
