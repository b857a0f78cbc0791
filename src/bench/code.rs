//! The bench's failure codes: the stable kebab-case strings a device result carries in the
//! progress line, `--json` and the bench state (`error_code`). The strings are a contract.

use crate::reject::RejectCode;
use std::fmt;

/// Why one device did not finish, as a stable code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BenchCode {
    /// The bench itself failed (state database, requests file, a worker stopped).
    InternalError,
    /// Modem firmware too old for `%KEYGEN`.
    OldFirmware,
    /// The sec_tag holds a key or certificate this bench did not export.
    SlotOccupied,
    /// The sec_tag holds another key than the one exported.
    KeyChanged,
    /// KEYGEN answered but the slot lists no key.
    NoKeyStored,
    /// The modem refused `%KEYGEN` with subject attributes (`--device-id imei`).
    KeygenAttributesRefused,
    /// No usable `%ATTESTTOKEN` came back for `--claim-tokens`.
    ClaimTokenMissing,
    /// The KEYGEN reply fails the signer's check with this reject code.
    Keygen(RejectCode),
    /// The certificate in the bundle cannot be parsed.
    CertMalformed,
    /// The certificate does not chain to the trusted CA.
    CertUntrusted,
    /// The certificate's key is not the key recorded at export.
    CertKeyMismatch,
    /// The certificate is expired or not yet valid.
    CertExpired,
    /// The certificate names another device.
    CertWrongDevice,
    /// The device is pinned to another CA.
    CaChanged,
    /// The device holds a certificate installed before CA pinning, from an unknown CA.
    CaUnpinned,
    /// This bench never exported the device.
    NotExportedHere,
    /// The device's export is not complete.
    NotExported,
    /// The signer rejected the device's request.
    RequestRejected,
    /// The bundle has no certificate for the device.
    NoCertificate,
    /// The modem's UUID is not the one recorded at export.
    IdentityMismatch,
    /// The key exported is no longer in the slot.
    KeyMissing,
    /// The modem does not list the SHA-256 of what was written.
    VerifyFailed,
    /// The serial port does not exist.
    PortNotFound,
    /// No permission to open the serial port.
    PortPermission,
    /// The serial port is in use.
    PortBusy,
    /// The serial port cannot be opened for another reason.
    PortOpenFailed,
    /// Nothing answers `AT`.
    NotResponding,
    /// No final result in time.
    Timeout,
    /// The port went away.
    Disconnected,
    /// The modem restarted mid-command.
    DeviceReset,
    /// Plain `ERROR`.
    AtError,
    /// `+CME ERROR: <n>`.
    Cme(u16),
    /// `+CMS ERROR: <n>`.
    Cms(u16),
    /// A reply the bench does not understand.
    UnexpectedReply,
    /// Content that cannot be sent as an AT command.
    BadContent,
    /// A code recorded earlier (bench state, rejects.csv) and reported again as it was.
    Recorded(String),
}

impl BenchCode {
    /// The kebab-case string.
    pub fn as_string(&self) -> String {
        let s = match self {
            BenchCode::InternalError => "internal-error",
            BenchCode::OldFirmware => "old-firmware",
            BenchCode::SlotOccupied => "slot-occupied",
            BenchCode::KeyChanged => "key-changed",
            BenchCode::NoKeyStored => "no-key-stored",
            BenchCode::KeygenAttributesRefused => "keygen-attributes-refused",
            BenchCode::ClaimTokenMissing => "claim-token-missing",
            BenchCode::Keygen(r) => return format!("keygen-{}", r.as_str()),
            BenchCode::CertMalformed => "cert-malformed",
            BenchCode::CertUntrusted => "cert-untrusted",
            BenchCode::CertKeyMismatch => "cert-key-mismatch",
            BenchCode::CertExpired => "cert-expired",
            BenchCode::CertWrongDevice => "cert-wrong-device",
            BenchCode::CaChanged => "ca-changed",
            BenchCode::CaUnpinned => "ca-unpinned",
            BenchCode::NotExportedHere => "not-exported-here",
            BenchCode::NotExported => "not-exported",
            BenchCode::RequestRejected => "request-rejected",
            BenchCode::NoCertificate => "no-certificate",
            BenchCode::IdentityMismatch => "identity-mismatch",
            BenchCode::KeyMissing => "key-missing",
            BenchCode::VerifyFailed => "verify-failed",
            BenchCode::PortNotFound => "port-not-found",
            BenchCode::PortPermission => "port-permission",
            BenchCode::PortBusy => "port-busy",
            BenchCode::PortOpenFailed => "port-open-failed",
            BenchCode::NotResponding => "not-responding",
            BenchCode::Timeout => "timeout",
            BenchCode::Disconnected => "disconnected",
            BenchCode::DeviceReset => "device-reset",
            BenchCode::AtError => "at-error",
            BenchCode::Cme(n) => return format!("cme-{n}"),
            BenchCode::Cms(n) => return format!("cms-{n}"),
            BenchCode::UnexpectedReply => "unexpected-reply",
            BenchCode::BadContent => "bad-content",
            BenchCode::Recorded(s) => return s.clone(),
        };
        s.to_string()
    }
}

impl fmt::Display for BenchCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The strings are a contract (progress lines, `--json`, the bench state): pin them.
    #[test]
    fn codes_keep_their_strings() {
        let table: &[(BenchCode, &str)] = &[
            (BenchCode::InternalError, "internal-error"),
            (BenchCode::OldFirmware, "old-firmware"),
            (BenchCode::SlotOccupied, "slot-occupied"),
            (BenchCode::KeyChanged, "key-changed"),
            (BenchCode::NoKeyStored, "no-key-stored"),
            (
                BenchCode::KeygenAttributesRefused,
                "keygen-attributes-refused",
            ),
            (BenchCode::ClaimTokenMissing, "claim-token-missing"),
            (
                BenchCode::Keygen(RejectCode::BadCsrSignature),
                "keygen-bad-csr-signature",
            ),
            (BenchCode::CertMalformed, "cert-malformed"),
            (BenchCode::CertUntrusted, "cert-untrusted"),
            (BenchCode::CertKeyMismatch, "cert-key-mismatch"),
            (BenchCode::CertExpired, "cert-expired"),
            (BenchCode::CertWrongDevice, "cert-wrong-device"),
            (BenchCode::CaChanged, "ca-changed"),
            (BenchCode::CaUnpinned, "ca-unpinned"),
            (BenchCode::NotExportedHere, "not-exported-here"),
            (BenchCode::NotExported, "not-exported"),
            (BenchCode::RequestRejected, "request-rejected"),
            (BenchCode::NoCertificate, "no-certificate"),
            (BenchCode::IdentityMismatch, "identity-mismatch"),
            (BenchCode::KeyMissing, "key-missing"),
            (BenchCode::VerifyFailed, "verify-failed"),
            (BenchCode::PortNotFound, "port-not-found"),
            (BenchCode::PortPermission, "port-permission"),
            (BenchCode::PortBusy, "port-busy"),
            (BenchCode::PortOpenFailed, "port-open-failed"),
            (BenchCode::NotResponding, "not-responding"),
            (BenchCode::Timeout, "timeout"),
            (BenchCode::Disconnected, "disconnected"),
            (BenchCode::DeviceReset, "device-reset"),
            (BenchCode::AtError, "at-error"),
            (BenchCode::Cme(518), "cme-518"),
            (BenchCode::Cms(500), "cms-500"),
            (BenchCode::UnexpectedReply, "unexpected-reply"),
            (BenchCode::BadContent, "bad-content"),
            (BenchCode::Recorded("slot-occupied".into()), "slot-occupied"),
        ];
        for (code, s) in table {
            assert_eq!(code.to_string(), *s);
        }
    }
}
