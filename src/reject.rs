//! Reject codes: why a request was refused, as data with stable kebab-case codes (SPEC §3).
//!
//! A reject is not an error: `sign` records it, goes on with the batch and exits 1. The codes
//! are a contract with scripts and are listed in `docs/reject-codes.md`; never rename one.

use std::fmt;

/// Why a request was refused. Variants are in the order `sign` checks them: the first check
/// that fails is the reported code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectCode {
    /// A line or row that is not a KEYGEN string / not the header's shape; line over 16 KiB.
    MalformedInput,
    /// Either half is not base64url.
    BadBase64,
    /// No COSE half.
    MissingAttestation,
    /// COSE_Sign1 / payload not of the documented shape.
    MalformedAttestation,
    /// msg_type is not 9 (CSR), e.g. 8 (public key only).
    WrongMessageType,
    /// The first half is not a PKCS#10 CSR.
    MalformedCsr,
    /// The key is not EC P-256 or not a valid point.
    UnsupportedKey,
    /// The CSR self-signature does not verify.
    BadCsrSignature,
    /// The COSE digest is not the SHA-256 of the CSR DER.
    DigestMismatch,
    /// The CSR CN does not match the attested device identity.
    IdentityMismatch,
    /// The attested sec_tag is not the one asked for.
    SecTagMismatch,
    /// A requests-file column disagrees with the attestation.
    MetadataMismatch,
    /// `sign --expect FILE` was given and the device (UUID or IMEI) is not listed in it.
    NotExpected,
    /// The same device twice in one batch (the first one wins).
    DuplicateInBatch,
    /// The CA already issued to this device for another key.
    AlreadyIssued,
    /// The public key is already certified for another device.
    KeyReuse,
}

impl RejectCode {
    /// Every code, in check order.
    pub const ALL: [RejectCode; 16] = [
        RejectCode::MalformedInput,
        RejectCode::BadBase64,
        RejectCode::MissingAttestation,
        RejectCode::MalformedAttestation,
        RejectCode::WrongMessageType,
        RejectCode::MalformedCsr,
        RejectCode::UnsupportedKey,
        RejectCode::BadCsrSignature,
        RejectCode::DigestMismatch,
        RejectCode::IdentityMismatch,
        RejectCode::SecTagMismatch,
        RejectCode::MetadataMismatch,
        RejectCode::NotExpected,
        RejectCode::DuplicateInBatch,
        RejectCode::AlreadyIssued,
        RejectCode::KeyReuse,
    ];

    /// The stable kebab-case code written to `rejects.csv`, JSON and the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectCode::MalformedInput => "malformed-input",
            RejectCode::BadBase64 => "bad-base64",
            RejectCode::MissingAttestation => "missing-attestation",
            RejectCode::MalformedAttestation => "malformed-attestation",
            RejectCode::WrongMessageType => "wrong-message-type",
            RejectCode::MalformedCsr => "malformed-csr",
            RejectCode::UnsupportedKey => "unsupported-key",
            RejectCode::BadCsrSignature => "bad-csr-signature",
            RejectCode::DigestMismatch => "digest-mismatch",
            RejectCode::IdentityMismatch => "identity-mismatch",
            RejectCode::SecTagMismatch => "sec-tag-mismatch",
            RejectCode::MetadataMismatch => "metadata-mismatch",
            RejectCode::NotExpected => "not-expected",
            RejectCode::DuplicateInBatch => "duplicate-in-batch",
            RejectCode::AlreadyIssued => "already-issued",
            RejectCode::KeyReuse => "key-reuse",
        }
    }

    /// Parse a code as written by [`RejectCode::as_str`].
    pub fn parse(s: &str) -> Option<RejectCode> {
        RejectCode::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// What the operator should do about a request rejected with this code.
    pub fn next_step(self) -> &'static str {
        match self {
            RejectCode::MalformedInput => "check the file is a requests CSV or one KEYGEN string per line",
            RejectCode::BadBase64 | RejectCode::MissingAttestation => {
                "the string was truncated or edited in transit: export the device again"
            }
            RejectCode::MalformedAttestation | RejectCode::MalformedCsr => {
                "the modem output is not a KEYGEN reply: export the device again and inspect it with `nrfca inspect`"
            }
            RejectCode::WrongMessageType => "run AT%KEYGEN with response_content 0 (CSR), not 1 (public key)",
            RejectCode::UnsupportedKey => "only EC P-256 keys made by the modem are accepted",
            RejectCode::BadCsrSignature | RejectCode::DigestMismatch => {
                "the request was altered or did not come from the modem: do not sign it; export the device again"
            }
            RejectCode::IdentityMismatch => "the CSR subject is not the modem's identity: check --device-id and export again",
            RejectCode::SecTagMismatch => "export again into the right sec_tag, or sign with --sec-tag / --any-sec-tag",
            RejectCode::MetadataMismatch => "the requests row was edited or mixed up: export the device again",
            RejectCode::NotExpected => "the device is not on the --expect list (e.g. the manufacturer's shipping list): find out where it came from before signing it",
            RejectCode::DuplicateInBatch => "the device appears twice; only its first request was signed",
            RejectCode::AlreadyIssued => "the device already has a certificate for another key; use --reissue if a new one is intended",
            RejectCode::KeyReuse => "the same key was presented for two devices: investigate the bench before signing",
        }
    }
}

impl fmt::Display for RejectCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused request: a stable code plus a human detail (never secret material).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// The stable code.
    pub code: RejectCode,
    /// What exactly was wrong, for the operator.
    pub detail: String,
}

impl Reject {
    /// Build a reject.
    pub fn new(code: RejectCode, detail: impl Into<String>) -> Self {
        Reject {
            code,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.detail)
    }
}

impl std::error::Error for Reject {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_kebab_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for c in RejectCode::ALL {
            let s = c.as_str();
            assert!(seen.insert(s), "duplicate code {s}");
            assert!(
                s.chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-'),
                "{s}"
            );
            assert_eq!(RejectCode::parse(s), Some(c));
        }
        assert_eq!(RejectCode::parse("nope"), None);
    }

    #[test]
    fn all_is_in_check_order() {
        let mut sorted = RejectCode::ALL;
        sorted.sort();
        assert_eq!(sorted, RejectCode::ALL);
    }
}
