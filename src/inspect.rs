//! TODO: inspect
