//! The gRPC edge: the tonic services of both listeners (thin adapters over `desk` and `peer`),
//! the protobuf codec, and the one place where errors become gRPC statuses (`status`).
//!
//! Boundary: may import `peer`, `desk` and everything below them; never the console, the node or
//! the command line.

pub mod codec;
pub mod desk_service;
pub mod peer_service;
pub mod status;
