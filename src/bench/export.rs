//! TODO: bench::export
