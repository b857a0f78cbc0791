//! TODO: bench::modem
