//! Compiles `proto/hanoi247/v1/*.proto` with the pure-Rust `protox`, so building needs no system
//! `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/hanoi247/v1/envelope.proto",
        "proto/hanoi247/v1/peer.proto",
        "proto/hanoi247/v1/desk.proto",
        "proto/hanoi247/store/v1/record.proto",
    ];
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(descriptors)?;
    Ok(())
}
