//! hanoi247: a node of the 24/7 network of the UN Convention against Cybercrime.
//!
//! One node per State; nodes exchange signed envelopes over gRPC with mutual TLS, and every
//! message is durable before anyone is told it is stored. `docs/design.md` says what the node
//! promises, `ARCHITECTURE.md` where each rule lives, `proto/` the wire contract.
//!
//! # Layout
//!
//! The folders are layers, bottom up; imports only run downwards (`tests/it/layers.rs`).
//!
//! - `domain`: rules with no I/O (identities, roles, validation, lifecycle, order, clock, names).
//! - `config`, `atomic_file`: the configuration files; the one atomic file write.
//! - `store`: the only sled user, behind its write-ahead log. `trust`: TLS, signatures, proofs,
//!   certificates, the signed directory.
//! - `runtime`: what the running services share (`NodeContext`).
//! - `peer`: delivery to and receipt from other nodes. `desk`: the desk operations.
//! - `rpc`: the gRPC edge. `console`: the officers' HTTPS console.
//! - `node`: the composition root. `cli`: the command line.

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
