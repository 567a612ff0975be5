//! The parts of `boxoffice-bench` other crates use: the scenario files' format and checks
//! (`scenario`), which the fuzz targets parse. Everything else lives in the binary.

pub mod scenario;
