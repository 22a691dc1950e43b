//! hanoi247: a node of the 24/7 network of the UN Convention against Cybercrime.
//!
//! See `ARCHITECTURE.md` for the map of modules and `../proto` for the wire contract.

pub mod atomic_file;
pub mod cli;
pub mod config;
pub mod console;
pub mod desk;
pub mod domain;
pub mod node;
pub mod peer;
pub mod rpc;
pub mod runtime;
pub mod store;
pub mod trust;

/// Code generated from `proto/`, nested like the proto packages so cross-package paths resolve.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
mod generated {
    pub mod hanoi247 {
        pub mod v1 {
            tonic::include_proto!("hanoi247.v1");
        }
        pub mod store {
            pub mod v1 {
                tonic::include_proto!("hanoi247.store.v1");
            }
        }
    }
}

/// Encoded descriptors of every proto, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/hanoi247_descriptor.bin"));

/// The store's internal record format (`proto/hanoi247/store/v1`).
pub use generated::hanoi247::store::v1 as store_proto;
/// Wire types and gRPC stubs of `proto/hanoi247/v1` (envelope, peer and desk services).
pub use generated::hanoi247::v1 as proto;
