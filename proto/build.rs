//! Generate the gRPC code from `estate/**/*.proto` with a vendored protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=estate");
    let mut config = tonic_prost_build::Config::new();
    // A pinned protoc from the crate registry: nothing to install on a fresh machine.
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure().build_transport(false).compile_with_config(
        config,
        &["estate/inventory/v1/inventory.proto"],
        &["."],
    )?;
    Ok(())
}
