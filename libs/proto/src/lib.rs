//! Generated code for the contracts in `proto/`; nothing hand-written lives here.

/// Everything in `proto/`, encoded, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/verimail_descriptor.bin"));

#[allow(clippy::doc_lazy_continuation, clippy::doc_overindented_list_items, clippy::large_enum_variant)]
pub mod user {
    pub mod v1 {
        tonic::include_proto!("verimail.user.v1");
    }
}

#[allow(clippy::doc_lazy_continuation, clippy::doc_overindented_list_items, clippy::large_enum_variant)]
pub mod auth {
    pub mod v1 {
        tonic::include_proto!("verimail.auth.v1");
    }
}

#[allow(clippy::doc_lazy_continuation, clippy::doc_overindented_list_items, clippy::large_enum_variant)]
pub mod email {
    pub mod v1 {
        tonic::include_proto!("verimail.email.v1");
    }
}

#[allow(clippy::doc_lazy_continuation, clippy::doc_overindented_list_items, clippy::large_enum_variant)]
pub mod events {
    pub mod v1 {
        tonic::include_proto!("verimail.events.v1");
    }
}

#[allow(clippy::doc_lazy_continuation, clippy::doc_overindented_list_items, clippy::large_enum_variant)]
pub mod ops {
    pub mod v1 {
        tonic::include_proto!("verimail.ops.v1");
    }
}
