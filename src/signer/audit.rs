//! TODO: signer::audit
