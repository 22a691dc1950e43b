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
    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.include_imports(true).include_source_info(true).open_files(protos)?;
    // Server reflection serves these descriptors, comments included, to grpcurl and friends.
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("hanoi247_descriptor.bin"), compiler.encode_file_descriptor_set())?;
    let descriptors = compiler.file_descriptor_set();
    // Our codec: a message that does not decode is INVALID_ARGUMENT naming the field, not INTERNAL.
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .codec_path("crate::rpc::codec::ProtoCodec")
        .compile_fds(descriptors)?;
    Ok(())
}
