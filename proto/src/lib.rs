//! The generated code of boxoffice's public contract, package `boxoffice.v1` (the `.proto` files
//! next to this crate are the source of truth). Holds no logic: conversion to and from the
//! engine's domain types happens at the edge, in `server`.

#![allow(clippy::large_enum_variant, clippy::doc_lazy_continuation)]

pub mod v1 {
    tonic::include_proto!("boxoffice.v1");
}

/// The encoded `FileDescriptorSet` of every boxoffice proto, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/boxoffice_descriptor.bin"));

pub use prost_types::Timestamp;
