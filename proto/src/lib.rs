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
