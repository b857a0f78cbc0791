//! TODO: keygen
