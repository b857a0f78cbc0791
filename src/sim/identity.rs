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
        if !seeded {
            let modem = ModemIdentity::random().map_err(|e| SimError::Identity(e.to_string()))?;
            return Ok(SimIdentity {
                imei: digits,
                uuid: modem.uuid(),
                modem,
            });
        }
        let mut uuid = [0u8; 16];
        rng.fill(&mut uuid);
        uuid[6] = (uuid[6] & 0x0f) | 0x40;
        uuid[8] = (uuid[8] & 0x3f) | 0x80;
        let pkcs8 = loop {
            let mut scalar = Zeroizing::new([0u8; 32]);
            rng.fill(scalar.as_mut());
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
