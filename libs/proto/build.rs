//! Compiles every contract under proto/ with protox (pure Rust, no system protoc) and keeps the
//! descriptor set beside the generated code so the services can serve it through reflection.
use prost::Message;
use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "verimail/user/v1/user.proto",
    "verimail/auth/v1/auth.proto",
    "verimail/email/v1/email.proto",
    "verimail/email/v1/webhooks.proto",
    "verimail/events/v1/events.proto",
    "verimail/ops/v1/parking.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    println!("cargo:rerun-if-changed={}", root.display());
    let fds = protox::compile(PROTOS, [&root])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("verimail_descriptor.bin"), fds.encode_to_vec())?;
    // Type names let an event say what it is (the Verimail-Event-Type header).
    let mut config = tonic_prost_build::Config::new();
    config.enable_type_names();
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds_with_config(fds, config)?;
    Ok(())
}
