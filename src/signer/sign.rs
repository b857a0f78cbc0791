//! TODO: signer::sign
