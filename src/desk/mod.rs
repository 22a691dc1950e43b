//! The desk: what focal points, operators and agency systems do at their own node, and the
//! operator views over queues and peers.
//!
//! Boundary: may import `runtime` and everything below it; never the peer side, the gRPC edge,
//! the console or the node.

pub mod operator_view;
pub mod service;
