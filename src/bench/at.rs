//! TODO: bench::at
