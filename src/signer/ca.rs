//! TODO: signer::ca
