//! Generates the gRPC code from the `.proto` files with the vendored
//! `protoc`, so that building needs no system package.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);

    let protos = [
        "proto/workload.proto",
        "proto/tessera/types/v1/types.proto",
        "proto/tessera/agent/v1/agent.proto",
        "proto/tessera/admin/v1/admin.proto",
    ];
    let well_known: PathBuf = protoc_bin_vendored::include_path()?;
    let well_known = well_known
        .to_str()
        .ok_or("protoc include path is not UTF-8")?;
    let includes = ["proto", well_known];
    tonic_prost_build::configure().compile_with_config(config, &protos, &includes)?;

    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    Ok(())
}
