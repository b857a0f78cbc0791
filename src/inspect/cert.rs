//! X.509 certificates for `nrfca inspect`, decoded with `x509-cert`.

use super::keys::{ext_name, ext_value_text, key_info_from_spki, verify_with_spki};
use super::*;
use crate::keygen::csr;
use x509_cert::Certificate;

/// A decoded certificate and the parts its signature check needs.
pub(super) struct RawCert<'a> {
    /// The TBSCertificate exactly as given (what the signature covers).
    tbs: &'a [u8],
    sig_alg: Vec<u8>,
    signature: Vec<u8>,
    /// Issuer and subject Names in DER, for matching a certificate with its issuer.
    issuer: Vec<u8>,
    subject: Vec<u8>,
    spki: Vec<u8>,
    info: CertInfo,
}

/// RFC 3339 (`YYYY-MM-DDTHH:MM:SSZ`) for a certificate time.
fn time_text(t: &x509_cert::time::Time) -> String {
    t.to_date_time().to_string()
}

/// A Name in DER as RFC 4514 text, through the one renderer (`keygen::csr`).
fn name_text(der: &[u8]) -> String {
    csr::name_der_to_string(der).unwrap_or_else(|e| format!("(unreadable: {e})"))
}

/// Decode one certificate with `x509-cert`. The TBSCertificate bytes the signature covers
/// are taken from the input as given (not re-encoded), through the `der` reader.
pub(super) fn parse_cert(d: &[u8]) -> Result<RawCert<'_>, der::Error> {
    use der::{Decode, Encode, Reader, SliceReader};
    let cert = Certificate::from_der(d)?;
    let mut r = SliceReader::new(d)?;
    let tbs = r.sequence(|r| {
        let tbs = r.tlv_bytes()?;
        // The rest was checked by `from_der`; skip it.
        let rest = r.remaining_len();
        r.read_slice(rest)?;
        Ok(tbs)
    })?;
    let t = &cert.tbs_certificate;
    let issuer = t.issuer.to_der()?;
    let subject = t.subject.to_der()?;
    let spki_der = t.subject_public_key_info.to_der()?;
    let spki = csr::Spki::parse(&spki_der).map_err(|_| der::Tag::Sequence.value_error())?;
    let mut extensions = Vec::new();
    for x in t.extensions.iter().flatten() {
        let (o, v) = (x.extn_id.as_bytes(), x.extn_value.as_bytes());
        extensions.push(ExtInfo {
            name: ext_name(o),
            critical: x.critical,
            value: ext_value_text(o, v),
        });
    }
    let serial = t.serial_number.as_bytes();
    let sig_alg = cert.signature_algorithm.oid.as_bytes().to_vec();
    let info = CertInfo {
        subject: name_text(&subject),
        issuer: name_text(&issuer),
        serial: hex::encode(serial.strip_prefix(&[0]).unwrap_or(serial)),
        not_before: time_text(&t.validity.not_before),
        not_after: time_text(&t.validity.not_after),
        key: key_info_from_spki(&spki),
        signature_algorithm: csr::oid_name(&sig_alg),
        self_signed: subject == issuer,
        signature_ok: None,
        extensions,
        sha256: crypto::sha256_hex(d),
    };
    Ok(RawCert {
        tbs,
        sig_alg,
        signature: cert.signature.raw_bytes().to_vec(),
        issuer,
        subject,
        spki: spki_der,
        info,
    })
}

/// Decode certificates (DER each) and judge them: every one must parse, and where its issuer
/// is in the input (or it is self-signed) its signature must verify.
pub fn inspect_certificates(input: &[u8], ders: &[Vec<u8>]) -> Report {
    let mut r = base_report(InputKind::Certificate, input);
    let mut raws = Vec::new();
    for (i, d) in ders.iter().enumerate() {
        match parse_cert(d) {
            Ok(c) => raws.push(c),
            Err(e) => {
                r.valid = false;
                r.code = Some(RejectCode::MalformedInput.as_str().into());
                r.detail = format!(
                    "certificate {} is not a valid X.509 certificate: {e}",
                    i + 1
                );
                return r;
            }
        }
    }
    let mut bad = None;
    for i in 0..raws.len() {
        let issuer = raws
            .iter()
            .find(|c| c.subject == raws[i].issuer)
            .and_then(|c| csr::Spki::parse(&c.spki).ok());
        let ok = issuer
            .and_then(|s| verify_with_spki(&raws[i].sig_alg, &s, raws[i].tbs, &raws[i].signature));
        if ok == Some(false) && bad.is_none() {
            bad = Some(i);
        }
        let mut info = raws[i].info.clone();
        info.signature_ok = ok;
        r.certificates.push(info);
    }
    match bad {
        Some(i) => {
            r.valid = false;
            r.code = Some("bad-certificate-signature".into());
            r.detail = format!(
                "certificate {} ({}) does not verify with its issuer's key",
                i + 1,
                r.certificates
                    .get(i)
                    .map(|c| c.subject.as_str())
                    .unwrap_or("")
            );
        }
        None => {
            r.detail = format!(
                "{} certificate{} decoded{}",
                ders.len(),
                if ders.len() == 1 { "" } else { "s" },
                if r.certificates.iter().all(|c| c.signature_ok == Some(true)) {
                    "; every signature verifies"
                } else if r.certificates.iter().any(|c| c.signature_ok == Some(true)) {
                    "; signatures verify where the issuer is in the input"
                } else {
                    "; issuer not in the input, signature not checked"
                }
            );
        }
    }
    r
}
