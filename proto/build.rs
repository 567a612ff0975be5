//! Compiles `boxoffice/v1/*.proto` with protox (a protobuf compiler in Rust), so a fresh machine
//! needs no `protoc`, and keeps the encoded descriptor set for server reflection.

use std::path::PathBuf;

use protox::prost::Message;

const PROTOS: &[&str] = &[
    "boxoffice/v1/types.proto",
    "boxoffice/v1/event_admin.proto",
    "boxoffice/v1/reservations.proto",
    "boxoffice/v1/availability.proto",
    "boxoffice/v1/order_events.proto",
    "boxoffice/v1/payments.proto",
    "boxoffice/v1/check_in.proto",
    "boxoffice/v1/wallet.proto",
    "boxoffice/v1/ticket_files.proto",
    "boxoffice/v1/mail.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(PROTOS, ["."])?;
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?);
    std::fs::write(
        out_dir.join("boxoffice_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .emit_rerun_if_changed(false)
        .compile_fds(descriptors)?;
    Ok(())
}
