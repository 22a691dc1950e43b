//! The peer side: one delivery task per directory peer (`delivery`) and the order in which
//! pipelined batches from a peer are stored (`batch_order`), and receiving batches from peers
//! (`receive`, behind the gRPC `PeerService`), recovering a restored node from its peers
//! (`recovery`), and witnessing peers' signed audit heads
//! (`witness`).
//!
//! Boundary: may import `runtime` and everything below it; never the desk, the gRPC edge, the
//! console or the node.

pub mod batch_order;
pub mod delivery;
pub mod receive;
pub mod recovery;
pub mod transfer;
pub mod witness;
