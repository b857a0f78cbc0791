//! The simulator's small deterministic random source (SplitMix64): identities from `--seed`,
//! fault probabilities, jitter and garbage bytes. Not for real key material.

/// A SplitMix64 generator. Same seed, same sequence.
#[derive(Debug, Clone)]
pub struct SimRng {
    state: u64,
}

impl SimRng {
    /// A generator with a fixed seed.
    pub fn from_seed(seed: u64) -> SimRng {
        SimRng { state: seed }
    }

    /// A generator seeded from the operating system.
    pub fn from_os() -> SimRng {
        let mut b = [0u8; 8];
        // A failing OS RNG only makes the simulator less random, never unsafe.
        let _ = crate::crypto::fill_random(&mut b);
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        SimRng::from_seed(u64::from_le_bytes(b) ^ t)
    }

    /// A generator for sub-stream `index` of `seed` (one per modem).
    pub fn derive(seed: u64, index: u64) -> SimRng {
        let mut r = SimRng::from_seed(seed ^ index.wrapping_mul(0xA076_1D64_78BD_642F));
        let s = r.next_u64();
        SimRng::from_seed(s)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    /// True with probability `p` (clamped to 0..=1).
    pub fn chance(&mut self, p: f64) -> bool {
        if p >= 1.0 {
            return true;
        }
        if p <= 0.0 || p.is_nan() {
            return false;
        }
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    /// Fill `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            let n = chunk.len();
            chunk.copy_from_slice(&v[..n]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic() {
        let mut a = SimRng::derive(7, 1);
        let mut b = SimRng::derive(7, 1);
        let mut c = SimRng::derive(7, 2);
        assert_eq!(a.next_u64(), b.next_u64());
        assert_ne!(a.next_u64(), c.next_u64());
        assert!(a.below(10) < 10);
        assert!(!a.chance(0.0));
        assert!(a.chance(1.0));
    }
}
