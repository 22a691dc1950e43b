//! Integration tests: real nodes, real mTLS, real sled, on loopback.

mod support;

mod bad_input;
mod delivery;
mod demo;
mod identity_checks;
mod lifecycle;
