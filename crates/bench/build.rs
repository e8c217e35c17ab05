//! Generates the echo service used as the bare gRPC baseline, with the
//! vendored `protoc` so that building needs no system package.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    // The server hands out clones of one preallocated buffer.
    config.bytes(["."]);

    let protos = ["proto/echo.proto"];
    tonic_prost_build::configure().compile_with_config(config, &protos, &["proto"])?;

    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    Ok(())
}
