//! nrfca: an offline certificate authority for provisioning Nordic nRF91 modems for nRF Cloud.
//!
//! The flow, in the order data moves:
//!
//! 1. **bench** ([`bench`], feature `bench`): `AT%KEYGEN` on many modems at once; each KEYGEN
//!    string is checked with [`keygen`] and appended to a [`requests`] file.
//! 2. **signer** ([`signer`]): unlock the age-encrypted CA key, check every request
//!    ([`keygen`] + [`signer::policy`]), issue certificates in one SQLite transaction, append
//!    to the hash-chained [`signer::audit`] log and write a signed [`bundle`].
//! 3. **bench** again: verify the [`bundle`] against the trusted CA and install each
//!    certificate, proving every write by SHA-256.
//!
//! Between the halves sits only what both share: the KEYGEN format ([`keygen`]), the
//! requests file ([`requests`]), the bundle format ([`bundle`]), reject codes ([`reject`]),
//! and small crypto helpers ([`crypto`]). Signer code never imports bench or serial code, parsers
//! never do I/O and the library never prints.
#![forbid(unsafe_code)]
#![deny(clippy::print_stdout, clippy::print_stderr, clippy::dbg_macro)]
#![warn(missing_docs)]

pub mod bundle;
pub mod checkpoint;
pub mod crypto;
pub mod error;
pub mod inspect;
pub mod interrupt;
pub mod keygen;
pub mod merkle;
pub mod oid;
pub mod provenance;
pub mod reject;
pub mod requests;
pub mod signer;
pub mod util;

#[cfg(feature = "bench")]
pub mod bench;
#[cfg(feature = "bench")]
pub mod demo;
#[cfg(feature = "bench")]
pub mod sim;

pub use error::error_chain;
