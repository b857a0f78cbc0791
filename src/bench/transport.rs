//! TODO: bench::transport
