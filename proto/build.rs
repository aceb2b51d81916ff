//! Compiles the .proto files with protox (a pure-Rust protobuf compiler), so
//! building needs no `protoc` on the machine, and writes the descriptor set
//! that gRPC reflection serves.
use prost::Message;

const FILES: &[&str] = &[
    "proto/cluster.proto",
    "proto/agent.proto",
    "proto/conference.proto",
    "proto/portal.proto",
    "proto/management.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fds = protox::compile(FILES, ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("conclave_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    // etcd's lease and election API, for the cluster manager's election:
    // clients only, and kept out of the descriptor set reflection serves
    let etcd = protox::compile(["etcd_rpc.proto", "etcd_election.proto"], ["etcd"])?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .compile_fds(etcd)?;
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=etcd");
    Ok(())
}
