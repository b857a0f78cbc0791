//! TODO: bench::state
