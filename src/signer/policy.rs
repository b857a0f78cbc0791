//! TODO: signer::policy
