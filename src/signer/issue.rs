//! TODO: signer::issue
