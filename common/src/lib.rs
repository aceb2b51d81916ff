//! The runtime every Conclave service shares: configuration loading,
//! telemetry, gRPC serving and clients, shutdown, and the cluster-worker
//! client that portals and agents use to stay members of the cluster.

pub mod cli;
pub mod cluster_watch;
pub mod cluster_worker;
pub mod config;
pub mod counting_alloc;
pub mod grpc;
pub mod handshake;
pub mod http;
pub mod limits;
pub mod load;
pub mod metrics;
pub mod net;
pub mod purpose;
pub mod shutdown;
pub mod sync;
pub mod telemetry;
pub mod tls;
pub mod token;
pub mod trace;

pub use conclave_proto as proto;
