//! Trust: who gets a socket (`admission`: caps on connections and handshakes), TLS configurations and the caller's identity from its certificate (`tls`), signatures
//! over envelopes and receipts (`signing`), offline proof files (`proof`), certificates made with
//! rcgen (`pki`), the signed member directory (`directory`) and when to read files again
//! (`reload`); signed audit heads and backup signatures (`witness`).
//!
//! Boundary: may import `domain` and `config`; never the store, the peer side, the desk or
//! anything above them.

pub mod admission;
pub mod directory;
pub mod merkle;
pub mod pki;
pub mod proof;
pub mod reload;
pub mod signing;
pub mod tls;
pub mod witness;
