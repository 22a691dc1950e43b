//! Integration tests: real nodes, real mTLS, real sled, on loopback.

mod support;

mod agency_python;
mod audit;
mod backup;
mod bad_input;
mod batch_signatures;
mod chaos;
mod clock;
mod console;
mod console_browser;
mod current_status;
mod delivery;
mod demo;
mod directory;
mod durability;
mod expiry;
mod faults;
mod hostile_edges;
mod identity_checks;
mod in_flight;
mod layers;
mod lifecycle;
mod local_network;
mod operator_view;
mod pipelining;
mod references;
mod resource_bounds;
mod revocation;
mod roles;
mod shutdown;
mod signing;
mod storage_failure;
mod tamper_evidence;
mod tls_policy;
mod write_ahead_log;
