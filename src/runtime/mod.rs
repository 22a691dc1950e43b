//! What a running node's services share: [`context::NodeContext`] (configuration, store, signer,
//! directory, delivery wake-ups), the in-memory peer board, the metrics and the layer that turns
//! a handler's panic into an answer (`catch_panic`).
//!
//! Boundary: may import `domain`, `config`, `store` and `trust`; never the peer side, the desk,
//! the gRPC edge, the console or the node that builds it.

pub mod catch_panic;
pub mod context;
pub mod metrics;
pub mod notify;
pub mod peer_board;
