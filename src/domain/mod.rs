//! The domain rules, with no I/O and no knowledge of the layers above: who a certificate names
//! (`identity`), who may do what (`access`), what makes an envelope acceptable (`validation`),
//! the message lifecycle (`lifecycle`), time (`timestamp`), the names of proto values
//! (`names`) and their JSON views (`json`), precedence ranks and the desk's inbox order
//! (`order`), which characters foreign text may hold (`text`), what closing a case removes
//! once its retention period is over (`closing`), and the follow-ups of a preservation this
//! node sent (`follow_up`: an extension, the mutual legal assistance request sent).
//!
//! Boundary: imports nothing of this crate but the generated `proto` types; never touches the
//! store, the network, TLS or files.

pub mod access;
pub mod clock;
pub mod closing;
pub mod follow_up;
pub mod identity;
pub mod json;
pub mod lifecycle;
pub mod local_time;
pub mod names;
pub mod order;
pub mod text;
pub mod timestamp;
pub mod validation;
