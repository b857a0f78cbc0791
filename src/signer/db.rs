//! TODO: signer::db
