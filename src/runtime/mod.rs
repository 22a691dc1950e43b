//! What a running node's services share: [`context::NodeContext`] (configuration, store, signer,
//! directory, delivery wake-ups), the in-memory peer board and the metrics.
//!
//! Boundary: may import `domain`, `config`, `store` and `trust`; never the peer side, the desk,
//! the gRPC edge, the console or the node that builds it.

pub mod context;
pub mod metrics;
pub mod peer_board;
