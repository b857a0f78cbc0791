//! nrfca: an offline certificate authority for provisioning Nordic nRF91 modems for nRF Cloud.
//!
//! The flow, in the order data moves:
//!
//! 1. **bench** (`nrfca::bench`, feature `bench`): `AT%KEYGEN` on many modems at once; each
//!    KEYGEN string is checked with [`keygen`] and appended to a [`requests`] file.
//! 2. **signer** ([`signer`]): unlock the CA key, check every request ([`keygen`] and the
//!    batch policy), issue certificates in one SQLite transaction, append to the hash-chained
//!    [`signer::audit`] log and write a signed [`bundle`].
//! 3. **bench** again: verify the [`bundle`] against the trusted CA and install each
//!    certificate, proving every write by SHA-256.
//!
//! Between the halves sits only what both share: the KEYGEN format ([`keygen`]), the
//! requests file ([`requests`]), the bundle format ([`bundle`]) and reject codes ([`reject`]).
//! Signer code never imports bench or serial code, parsers never do I/O and the library never
//! prints.
//!
//! # Public API
//!
//! What a program calls: the `nrfca` binary (one library call per subcommand), or one that
//! embeds the signer or the bench.
//!
//! - **Signer operations** ([`signer`]): a batch ([`signer::sign`]: `sign` and `dry_run`,
//!   [`SignOptions`](signer::sign::SignOptions) in, [`SignReport`](signer::sign::SignReport)
//!   out), the CA directory ([`signer::ca`]: init, import, show, unlock, reshare, trusted
//!   benches), the audit log ([`signer::audit`]: verify, show, export), batch reports
//!   ([`signer::report`]), re-protecting the key ([`signer::protect`]), custody
//!   ([`signer::key`], [`signer::secret`]: passphrase, age identity, PKCS#11 token, quorum of
//!   shares) and the lifecycle ([`signer::lifecycle`]: revoke, CRL, intermediate CAs, the AWS
//!   IoT verification certificate).
//! - **Bench operations** (feature `bench`): `nrfca::bench` (export, import, `verify_bundle`,
//!   the bench's state and evidence, serial ports), `nrfca::sim` (the modem simulator and the
//!   request generator of `nrfca gen`) and `nrfca::demo` (the narrated end-to-end run).
//! - **Formats others read or write**: [`keygen`] (KEYGEN / ATTESTTOKEN strings and the
//!   per-string checks), [`requests`], [`bundle`] (writer and verifier), [`checkpoint`] (signed
//!   audit checkpoints), [`provenance`] (signed evidence statements), [`reject`] (the stable
//!   reject codes) and [`inspect`] (decode and judge any of them).
//! - **Helpers for a binary**: [`interrupt`] (SIGINT / SIGTERM / SIGHUP as a flag that long
//!   calls poll), [`error_chain`], [`term_escape`], [`operator_name`].
//!
//! Everything else is private: the database, the staging area, the certificate template and
//! the batch policy of the signer; the CBOR / COSE / DER readers under [`keygen`]; the AT
//! parser, modem client and per-port runner of the bench; the simulator's engine, framing and
//! storage; SHA-256 / ECDSA, OID, PEM and Merkle-tree helpers. A hidden `nrfca::internal`
//! module re-exports the pieces this repository's tests, benches and fuzz targets reach; it
//! is not API and carries no stability promise. The rule for adding to either is in
//! `docs/architecture.md` ("Public API").
#![forbid(unsafe_code)]
#![deny(clippy::print_stdout, clippy::print_stderr, clippy::dbg_macro)]
#![warn(missing_docs)]
// A type in a public signature can be named by its caller: re-export it where it is used.
#![warn(unnameable_types)]

// The public surface: the modules below and the `pub use` items. Everything else is private
// (`internal` re-exports what tests, benches and fuzz targets need; it is not API).
pub mod bundle;
pub mod checkpoint;
pub mod inspect;
pub mod interrupt;
pub mod keygen;
pub mod provenance;
pub mod reject;
pub mod requests;
pub mod signer;

#[cfg(feature = "bench")]
pub mod bench;
#[cfg(feature = "bench")]
pub mod demo;
#[cfg(feature = "bench")]
pub mod sim;

mod crypto;
mod error;
mod merkle;
mod oid;
mod util;

pub use crypto::{CryptoError, P256Key};
pub use error::error_chain;
pub use util::{operator_name, term_escape};

/// What integration tests, benches and fuzz targets reach beyond the public surface.
///
/// **Not API.** Nothing here is covered by any stability promise: items come and go with the
/// code they re-export, and a caller outside this repository must not use them. The layout
/// mirrors the private modules (`internal::crypto` is `crate::crypto`, and so on) and lists
/// items one by one, so an item nobody reaches is still reported as dead code. Add an item
/// here only for a test, bench or fuzz target; what a program using the library needs belongs
/// in the public modules instead (docs/architecture.md, "Public API").
#[doc(hidden)]
#[allow(missing_docs)]
pub mod internal {
    pub mod crypto {
        pub use crate::crypto::{
            b64_decode, b64_encode, b64url_decode, b64url_encode, is_valid_p256_point,
            pkcs8_from_pem_any, sha256, sha256_hex, verify_p256_sha256, P256Key,
        };
    }
    pub mod merkle {
        pub use crate::merkle::Tree;
    }
    pub mod oid {
        pub use crate::oid::{CN, ECDSA_WITH_SHA256, EC_PUBLIC_KEY, SECP256R1};
    }
    pub mod util {
        pub use crate::util::{
            first_cert_der, is_imei_luhn, luhn_digit, parse_uuid, pem_blocks, pem_encode,
            uuid_string, PemBlock,
        };
    }
    pub mod keygen {
        pub mod cbor {
            pub use crate::keygen::cbor::{
                decode, write_bytes, write_head, CborError, Head, Reader, Value, MAX_DEPTH,
            };
        }
        pub mod cose {
            pub use crate::keygen::cose::{
                attest_payload, decode_sec_tag, device_type_name, encode_sec_tag, keygen_payload,
                parse_attest_payload, parse_keygen_payload, parse_sign1, sign1, verify_sign1,
                MSG_TYPE_CSR, MSG_TYPE_IDENTITY, PROTECTED_ES256, TAG_COSE_SIGN1,
                UNPROTECTED_IDENTITY_KID,
            };
        }
        pub mod csr {
            pub use crate::keygen::csr::{
                name_to_string, oid_name, parse_name_der, Csr, Spki, MAX_SUBJECT_ATTRS,
            };
        }
        pub mod tlv {
            pub use crate::keygen::tlv::{cons, oid_string, parse_one, tag, tlv, Tlv, MAX_DEPTH};
        }
    }
    pub mod signer {
        pub mod db {
            pub use crate::signer::db::open;
        }
        pub mod sign {
            /// The crash test hook's points (`NRFCA_CRASH_AT`), for tests/crash.rs.
            pub use crate::signer::sign::crash::CRASH_POINTS;
        }
        pub mod issue {
            pub use crate::signer::issue::{
                assemble, build_tbs, build_tbs_x509_cert, issue, key_identifier, rfc3339, Issuance,
                IssuedCert, IssuerProfile, Serial,
            };
        }
        pub mod staging {
            pub use crate::signer::staging::registered;
        }
    }
    #[cfg(feature = "bench")]
    pub mod bench {
        pub mod at {
            pub use crate::bench::at::{
                cmng_write_command, imei_valid, keygen_supported, normalize_pem, parse_cmng_line,
                parse_final, parse_fw_version, parse_quoted_reply, summarize_command, CmeCode,
                CmngEntry, Event, Final, FwVersion, Parser, MAX_COMMAND, MAX_LINE,
            };
        }
        pub mod identity {
            pub use crate::bench::identity::BenchIdentity;
        }
        pub mod import {
            pub use crate::bench::import::default_root_bundle;
        }
    }
    #[cfg(feature = "bench")]
    pub mod sim {
        pub mod engine {
            pub use crate::sim::engine::{Modem, Reply, MAX_REPLY};
        }
        pub mod fault {
            pub use crate::sim::fault::FaultSet;
        }
        pub mod framing {
            pub use crate::sim::framing::{
                frame, Final, Piece, Received, Receiver, COMMAND_BUFFER,
            };
        }
        pub mod identity {
            pub use crate::sim::identity::SimIdentity;
        }
        pub mod rng {
            pub use crate::sim::rng::SimRng;
        }
        pub mod storage {
            pub use crate::sim::storage::{Entry, Storage, StorageFull};
        }
    }
}
