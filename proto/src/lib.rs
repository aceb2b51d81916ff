//! Generated gRPC code for Conclave's five services, and the file descriptor
//! set that every server registers for reflection.

/// Encoded `FileDescriptorSet` of every Conclave .proto file.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("conclave_descriptor");

pub mod cluster {
    pub mod v1 {
        tonic::include_proto!("cluster.v1");
    }
}

pub mod agent {
    pub mod v1 {
        tonic::include_proto!("agent.v1");
    }
}

pub mod conference {
    pub mod v1 {
        tonic::include_proto!("conference.v1");
    }
}

pub mod portal {
    pub mod v1 {
        tonic::include_proto!("portal.v1");
    }
}

pub mod management {
    pub mod v1 {
        tonic::include_proto!("management.v1");
    }
}

/// The part of etcd's v3 API the cluster manager's election speaks
/// (leases, the election service), compiled from `etcd/` with etcd's own
/// field numbers. Clients only.
pub mod etcd {
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
    }
    pub mod v3electionpb {
        tonic::include_proto!("v3electionpb");
    }
}
