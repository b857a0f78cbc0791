//! TODO: bundle
