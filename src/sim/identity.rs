//! Who a simulated modem is: IMEI (Luhn-valid), device UUID and the simulated identity key
//! that signs KEYGEN and ATTESTTOKEN COSE structures; the only file that talks to
//! `sim::generate`.

use super::rng::SimRng;
use super::SimError;
use crate::sim::generate::{GenOptions, Generated, ModemIdentity};
use zeroize::Zeroizing;

/// A modem's identity. The identity private key is simulated secret material (zeroized on
/// drop, redacted in `Debug`).
pub struct SimIdentity {
    /// 15-digit IMEI with a valid Luhn digit.
    pub imei: String,
    /// Device UUID (the nRF Cloud device id and default CSR CN).
    pub uuid: [u8; 16],
    modem: ModemIdentity,
}

impl std::fmt::Debug for SimIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimIdentity")
            .field("imei", &self.imei)
            .field("uuid", &crate::util::uuid_string(&self.uuid))
            .finish_non_exhaustive()
    }
}

/// A device UUID shaped like the ones real nRF91 modems report (the seed's
/// `50503041-3539-47eb-807b-102dbb423b9a`: `PP0A59G…`): the first seven bytes printable ASCII
/// (six upper-case letters or digits, then the version byte `0x41`–`0x4F`, version 4), the
/// variant byte exactly `0x80`, the rest random. Not a random version-4 UUID.
pub fn nordic_uuid(rng: &mut SimRng) -> [u8; 16] {
    const ALNUM: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut uuid = [0u8; 16];
    rng.fill(&mut uuid);
    for b in uuid.iter_mut().take(6) {
        *b = ALNUM[rng.below(ALNUM.len() as u64) as usize];
    }
    uuid[6] = 0x41 + rng.below(15) as u8;
    uuid[8] = 0x80;
    uuid
}

impl SimIdentity {
    /// A new identity; the TAC comes from the profile. With `seeded` the IMEI, UUID and
    /// identity key all come from `rng` (reproducible from `--seed`); otherwise UUID and key
    /// come from the operating system's generator.
    pub fn generate(tac: &str, rng: &mut SimRng, seeded: bool) -> Result<SimIdentity, SimError> {
        let mut digits = tac.to_string();
        while digits.len() < 14 {
            digits.push(char::from(b'0' + rng.below(10) as u8));
        }
        let luhn = crate::util::luhn_digit(&digits).unwrap_or(0);
        digits.push(char::from(b'0' + luhn));
        let mut os = SimRng::from_os();
        let uuid = nordic_uuid(if seeded { &mut *rng } else { &mut os });
        let pkcs8 = loop {
            let mut scalar = Zeroizing::new([0u8; 32]);
            if seeded {
                rng.fill(scalar.as_mut());
            } else {
                crate::crypto::fill_random(scalar.as_mut())
                    .map_err(|e| SimError::Identity(e.to_string()))?;
            }
            if let Ok(sk) = p256::SecretKey::from_slice(scalar.as_ref()) {
                use p256::pkcs8::EncodePrivateKey;
                let doc = sk
                    .to_pkcs8_der()
                    .map_err(|e| SimError::Identity(e.to_string()))?;
                break crate::crypto::pkcs8_normalize(doc.as_bytes())
                    .map_err(|e| SimError::Identity(e.to_string()))?;
            }
        };
        SimIdentity::from_parts(digits, uuid, pkcs8)
    }

    /// An identity from stored parts (state file).
    pub fn from_parts(
        imei: String,
        uuid: [u8; 16],
        identity_pkcs8: Zeroizing<Vec<u8>>,
    ) -> Result<SimIdentity, SimError> {
        let modem = ModemIdentity::from_parts(uuid, &identity_pkcs8)
            .map_err(|e| SimError::Identity(e.to_string()))?;
        Ok(SimIdentity { imei, uuid, modem })
    }

    /// The identity key's PKCS#8 (for the state file only).
    pub fn identity_pkcs8(&self) -> &[u8] {
        self.modem.identity_pkcs8()
    }

    /// The identity public key (uncompressed SEC1), what nRF Cloud would verify COSE with.
    pub fn identity_public_key(&self) -> [u8; 65] {
        self.modem.identity_public_key()
    }

    /// The device UUID as text.
    pub fn uuid_string(&self) -> String {
        crate::util::uuid_string(&self.uuid)
    }

    /// Generate a key pair and the KEYGEN string for `sec_tag`.
    pub fn keygen(
        &self,
        sec_tag: u32,
        attributes: Option<String>,
        response_content: u8,
    ) -> Result<Generated, String> {
        let opts = GenOptions {
            null_param: true,
            attributes,
            response_content,
        };
        self.modem.keygen(sec_tag, &opts).map_err(|e| e.to_string())
    }

    /// The KEYGEN string for a key the modem already holds (KEYGEN key_type 8 reuses an
    /// existing endorsement key).
    pub fn keygen_with(
        &self,
        key: crate::crypto::P256Key,
        pkcs8: zeroize::Zeroizing<Vec<u8>>,
        sec_tag: u32,
        attributes: Option<String>,
        response_content: u8,
    ) -> Result<Generated, String> {
        let opts = GenOptions {
            null_param: true,
            attributes,
            response_content,
        };
        self.modem
            .keygen_with(key, pkcs8, sec_tag, &opts)
            .map_err(|e| e.to_string())
    }

    /// The ATTESTTOKEN string.
    pub fn attesttoken(
        &self,
        challenge: Option<[u8; 16]>,
        device_type: u8,
        fw_uuid: [u8; 16],
    ) -> Result<String, String> {
        self.modem
            .attesttoken(challenge, device_type, fw_uuid)
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shaped like real modems' UUIDs (the seed's `50503041-3539-47eb-807b-…`), seeded or not.
    #[test]
    fn uuids_look_like_real_ones() {
        let check = |u: [u8; 16]| {
            let s = crate::util::uuid_string(&u);
            assert!(
                u[..6]
                    .iter()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()),
                "{s}"
            );
            assert!((0x41..=0x4f).contains(&u[6]), "printable version byte: {s}");
            assert_eq!(u[8], 0x80, "variant byte: {s}");
            assert_eq!(&s[14..15], "4");
            assert_eq!(&s[19..21], "80");
        };
        let mut rng = SimRng::from_seed(7);
        for _ in 0..200 {
            check(nordic_uuid(&mut rng));
        }
        let seeded = SimIdentity::generate("35940423", &mut SimRng::from_seed(1), true).unwrap();
        check(seeded.uuid);
        let os = SimIdentity::generate("35940423", &mut SimRng::from_seed(1), false).unwrap();
        check(os.uuid);
        assert_ne!(os.uuid, seeded.uuid);
    }
}
