//! TODO: bench::import
