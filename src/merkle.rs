//! The audit log as a Merkle tree (RFC 9162 §2.1, SHA-256): leaf and node hashing, roots of
//! any prefix, consistency proofs (§2.1.4) and their verification,
//! and the streaming [`Frontier`]. Pure: no I/O, shared by the signer and the bench.
//!
//! Leaf *i* of the audit tree is the 32-byte chain hash of audit record *i*; its leaf hash is
//! `SHA-256(0x00 || leaf)` and an interior node is `SHA-256(0x01 || left || right)`. The tree of
//! `n` leaves splits at the largest power of two below `n` (left-full), as in RFC 6962.
//!
//! Why not the `ct-merkle` crate: its `MemoryBackedTree` re-hashes the whole path to the root
//! on every push (≈ 19 hashes per leaf at 300 000 leaves, about 6 million hashes to rebuild
//! the tree when `ca.db` is opened), keeps every leaf value besides the hashes, and proves
//! consistency only to its current size. [`Tree`] costs one hash per leaf and one per
//! interior node (amortised O(1) per append), keeps 2·n hashes, and answers a root or a
//! proof for any pair of sizes in O(log n) hashes. The verifiers below follow the RFC's
//! §2.1.3.2 and §2.1.4.2 steps literally and are checked against the RFC 6962 test vectors.

use std::fmt;

/// A SHA-256 hash: a leaf hash, an interior node or a root.
pub type Hash = [u8; 32];

/// The root of the empty tree: SHA-256 of the empty string (RFC 9162 §2.1.1).
pub const EMPTY_ROOT: Hash = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

/// Longest proof accepted by the verifiers: a tree of 2^64 leaves needs at most 64 hashes,
/// plus one for the consistency proof's prepended root.
pub const MAX_PROOF_HASHES: usize = 65;

/// Why a root or a proof could not be made, or a proof did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MerkleError {
    /// A size or index beyond what the tree (or the statement) holds.
    #[error("{asked} is beyond a tree of {size} leaves: the log is shorter than what is claimed")]
    OutOfRange {
        /// What was asked for (a size or a leaf index).
        asked: u64,
        /// The tree size it must not exceed.
        size: u64,
    },
    /// The proof does not prove the statement (wrong root, size or hashes).
    #[error("the Merkle proof does not verify ({0})")]
    Mismatch(&'static str),
    /// The store the [`Nodes`] read from failed (e.g. `ca.db`).
    #[error("the tree's hashes could not be read: {0}")]
    Source(String),
}

/// `SHA-256(0x00 || data)`: the hash of one leaf (RFC 9162 §2.1.1).
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(&[0x00]);
    ctx.update(data);
    to_hash(ctx.finish())
}

/// `SHA-256(0x01 || left || right)`: an interior node (RFC 9162 §2.1.1).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut buf = [0u8; 65];
    buf[0] = 0x01;
    buf[1..33].copy_from_slice(left);
    buf[33..].copy_from_slice(right);
    to_hash(ring::digest::digest(&ring::digest::SHA256, &buf))
}

fn to_hash(d: ring::digest::Digest) -> Hash {
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// The largest power of two strictly below `n` (`n >= 2`).
pub fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// MTH over already hashed leaves, by the RFC's recursive definition: the reference the
/// tests compare [`Tree`] and [`Frontier`] with, and how the signer combines stored tiles
/// (the hashes of complete aligned subtrees: a power-of-two count of them is the hash of
/// their parent subtree); O(n) hashes.
pub fn root_of_leaf_hashes(leaf_hashes: &[Hash]) -> Hash {
    match leaf_hashes.len() {
        0 => EMPTY_ROOT,
        1 => leaf_hashes[0],
        n => {
            let k = split_point(n as u64) as usize;
            node_hash(
                &root_of_leaf_hashes(&leaf_hashes[..k]),
                &root_of_leaf_hashes(&leaf_hashes[k..]),
            )
        }
    }
}

// ----------------------------------------------------------------------------------- Nodes

/// Where roots and proofs come from: a tree's size and the hash of any range the RFC 9162
/// recursion reaches. [`Tree`] holds every node in memory; the signer reads its log's nodes
/// from `ca.db` (stored 256-leaf tiles and the few leaves at the edges), so a proof costs
/// O(n/256) reads, not the whole log. The RFC's algorithms (`root_at`,
/// `consistency_proof`) are written once, over this trait.
pub trait Nodes {
    /// Number of leaves.
    fn size(&self) -> u64;

    /// MTH(D\[start:end\]) for a range the RFC's recursion reaches: `end <= size()`, and
    /// `start` a multiple of the largest power of two not above `end - start`.
    fn range_hash(&self, start: u64, end: u64) -> Result<Hash, MerkleError>;
}

fn check_size(t: &impl Nodes, size: u64) -> Result<(), MerkleError> {
    if size > t.size() {
        return Err(MerkleError::OutOfRange {
            asked: size,
            size: t.size(),
        });
    }
    Ok(())
}

/// The root of the tree of the first `size` leaves of `t`.
pub fn root_at(t: &impl Nodes, size: u64) -> Result<Hash, MerkleError> {
    check_size(t, size)?;
    t.range_hash(0, size)
}

/// PROOF(m, D\[n\]) (RFC 9162 §2.1.4.1): the consistency proof from the tree of `old_size`
/// leaves of `t` to the tree of `new_size` leaves. Empty when `old_size` is 0 or equals
/// `new_size`.
pub fn consistency_proof(
    t: &impl Nodes,
    old_size: u64,
    new_size: u64,
) -> Result<Vec<Hash>, MerkleError> {
    check_size(t, new_size)?;
    if old_size > new_size {
        return Err(MerkleError::OutOfRange {
            asked: old_size,
            size: new_size,
        });
    }
    let mut out = Vec::new();
    if old_size > 0 && old_size < new_size {
        subproof(t, old_size, 0, new_size, true, &mut out)?;
    }
    Ok(out)
}

/// SUBPROOF(m, D\[start:end\], b), appending to `out` in the RFC's order.
fn subproof(
    t: &impl Nodes,
    m: u64,
    start: u64,
    end: u64,
    b: bool,
    out: &mut Vec<Hash>,
) -> Result<(), MerkleError> {
    let n = end - start;
    if m == n {
        if !b {
            out.push(t.range_hash(start, end)?);
        }
        return Ok(());
    }
    let k = split_point(n);
    if m <= k {
        subproof(t, m, start, start + k, b, out)?;
        out.push(t.range_hash(start + k, end)?);
    } else {
        subproof(t, m - k, start + k, end, false, out)?;
        out.push(t.range_hash(start, start + k)?);
    }
    Ok(())
}

// ------------------------------------------------------------------------------------ Tree

/// An append-only Merkle tree in memory: every leaf hash and the hash of every complete
/// aligned subtree (`levels[k][i]` covers leaves `i·2^k .. (i+1)·2^k`). About 64 bytes per
/// leaf; appends cost amortised one interior hash; roots and proofs for any sizes cost
/// O(log n) hashes.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Tree {
    levels: Vec<Vec<Hash>>,
}

impl fmt::Debug for Tree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tree({} leaves)", self.len())
    }
}

impl Tree {
    /// An empty tree.
    pub fn new() -> Self {
        Tree::default()
    }

    /// A tree over `leaves` (each hashed with `leaf_hash`), e.g. the chain hashes of an
    /// audit log in `seq` order.
    pub fn from_leaves<'a>(leaves: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut t = Tree::new();
        for l in leaves {
            t.push(l);
        }
        t
    }

    /// Number of leaves.
    pub fn len(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    /// Whether the tree has no leaves.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Append one leaf (hashed with `leaf_hash`).
    pub fn push(&mut self, leaf: &[u8]) {
        self.push_leaf_hash(leaf_hash(leaf));
    }

    /// Append a leaf whose leaf hash is already computed.
    pub fn push_leaf_hash(&mut self, h: Hash) {
        if self.levels.is_empty() {
            self.levels.push(Vec::new());
        }
        self.levels[0].push(h);
        let mut k = 0;
        while self.levels[k].len() % 2 == 0 {
            let n = self.levels[k].len();
            let parent = node_hash(&self.levels[k][n - 2], &self.levels[k][n - 1]);
            if self.levels.len() == k + 1 {
                self.levels.push(Vec::new());
            }
            self.levels[k + 1].push(parent);
            k += 1;
        }
    }

    /// The leaf hash of leaf `index`.
    pub fn leaf_hash(&self, index: u64) -> Option<Hash> {
        self.levels
            .first()?
            .get(usize::try_from(index).ok()?)
            .copied()
    }

    /// The root of the whole tree.
    pub fn root(&self) -> Hash {
        self.range_hash(0, self.len())
    }

    /// The root of the tree of the first `size` leaves.
    pub fn root_at(&self, size: u64) -> Result<Hash, MerkleError> {
        root_at(self, size)
    }

    /// MTH(D\[start:end\]) for a range the RFC's recursion reaches: `start` is a multiple of the
    /// largest power of two not above `end - start` (so every left part is a stored complete
    /// subtree). Callers keep `end <= len`.
    fn range_hash(&self, start: u64, end: u64) -> Hash {
        let n = end - start;
        if n == 0 {
            return EMPTY_ROOT;
        }
        if n.is_power_of_two() && start % n == 0 {
            let k = n.trailing_zeros() as usize;
            if let Some(h) = self
                .levels
                .get(k)
                .and_then(|l| l.get((start >> k) as usize))
            {
                return *h;
            }
        }
        if n == 1 {
            // Unreachable for end <= len (level 0 holds every leaf); keep the function total.
            return EMPTY_ROOT;
        }
        let k = split_point(n);
        node_hash(
            &self.range_hash(start, start + k),
            &self.range_hash(start + k, end),
        )
    }

    /// PROOF(m, D\[n\]) (RFC 9162 §2.1.4.1): the consistency proof from the tree of `old_size`
    /// leaves to the tree of `new_size` leaves. Empty when `old_size` is 0 or equals
    /// `new_size`.
    pub fn consistency_proof(
        &self,
        old_size: u64,
        new_size: u64,
    ) -> Result<Vec<Hash>, MerkleError> {
        consistency_proof(self, old_size, new_size)
    }
}

impl Nodes for Tree {
    fn size(&self) -> u64 {
        self.len()
    }

    fn range_hash(&self, start: u64, end: u64) -> Result<Hash, MerkleError> {
        Ok(Tree::range_hash(self, start, end))
    }
}

// ------------------------------------------------------------------------------ Frontier

/// The right edge of a tree (a "compact range" from leaf 0): one hash per complete subtree,
/// largest first, at most 64. Enough to append and to compute the root, never to prove. Use it
/// to recompute roots while streaming an exported log, or to keep a tree's root up to date
/// without holding its leaves.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    nodes: Vec<Hash>,
}

impl fmt::Debug for Frontier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Frontier({} leaves)", self.size)
    }
}

impl Frontier {
    /// The frontier of the empty tree.
    pub fn new() -> Self {
        Frontier::default()
    }

    /// Rebuild from a stored `size` and its complete-subtree hashes (largest first): there
    /// must be exactly one per bit set in `size`.
    pub fn from_parts(size: u64, nodes: Vec<Hash>) -> Option<Self> {
        (nodes.len() == size.count_ones() as usize).then_some(Frontier { size, nodes })
    }

    /// The complete-subtree hashes, largest (leftmost) first.
    pub fn nodes(&self) -> &[Hash] {
        &self.nodes
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Append one leaf (hashed with [`leaf_hash`]).
    pub fn push(&mut self, leaf: &[u8]) {
        self.push_leaf_hash(leaf_hash(leaf));
    }

    /// Append a leaf whose leaf hash is already computed.
    pub fn push_leaf_hash(&mut self, h: Hash) {
        let mut cur = h;
        // Each trailing one bit of `size` is a complete subtree that merges with the new one.
        let mut s = self.size;
        while s & 1 == 1 {
            if let Some(left) = self.nodes.pop() {
                cur = node_hash(&left, &cur);
            }
            s >>= 1;
        }
        self.nodes.push(cur);
        self.size += 1;
    }

    /// The root of the tree so far (folding the subtrees right to left).
    pub fn root(&self) -> Hash {
        let mut it = self.nodes.iter().rev();
        let Some(last) = it.next() else {
            return EMPTY_ROOT;
        };
        it.fold(*last, |acc, left| node_hash(left, &acc))
    }
}

// ---------------------------------------------------------------------------- verifiers

/// Verify a consistency proof (RFC 9162 §2.1.4.2): the tree of `new_size` leaves with root
/// `new_root` extends the tree of `old_size` leaves with root `old_root`. With
/// `old_size == new_size` the proof must be empty and the roots equal; with `old_size == 0`
/// the proof must be empty and `old_root` the empty root.
pub fn verify_consistency(
    old_size: u64,
    old_root: &Hash,
    new_size: u64,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), MerkleError> {
    if old_size > new_size {
        return Err(MerkleError::OutOfRange {
            asked: old_size,
            size: new_size,
        });
    }
    if proof.len() > MAX_PROOF_HASHES {
        return Err(MerkleError::Mismatch("proof too long"));
    }
    if old_size == new_size {
        if !proof.is_empty() {
            return Err(MerkleError::Mismatch(
                "a proof between equal sizes must be empty",
            ));
        }
        return if old_root == new_root {
            Ok(())
        } else {
            Err(MerkleError::Mismatch("same size, different roots"))
        };
    }
    if old_size == 0 {
        if !proof.is_empty() {
            return Err(MerkleError::Mismatch(
                "a proof from the empty tree must be empty",
            ));
        }
        return if *old_root == EMPTY_ROOT {
            Ok(())
        } else {
            Err(MerkleError::Mismatch(
                "the root of size 0 is not the empty root",
            ))
        };
    }
    if proof.is_empty() {
        return Err(MerkleError::Mismatch("empty proof"));
    }
    // 1. If first is an exact power of 2, prepend first_hash to the path.
    let mut path: Vec<&Hash> = Vec::with_capacity(proof.len() + 1);
    if old_size.is_power_of_two() {
        path.push(old_root);
    }
    path.extend(proof.iter());
    // 2. fn = first - 1, sn = second - 1.
    let mut fnn = old_size - 1;
    let mut sn = new_size - 1;
    // 3. If LSB(fn) is set, right-shift both until it is not.
    while fnn & 1 == 1 {
        fnn >>= 1;
        sn >>= 1;
    }
    // 4. fr = sr = first value of the path.
    let mut fr = *path[0];
    let mut sr = *path[0];
    // 5. For each subsequent value c.
    for c in &path[1..] {
        if sn == 0 {
            return Err(MerkleError::Mismatch("proof too long"));
        }
        if fnn & 1 == 1 || fnn == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fnn & 1 == 0 && fnn != 0 {
                fnn >>= 1;
                sn >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnn >>= 1;
        sn >>= 1;
    }
    // 6. fr == first_hash, sr == second_hash, sn == 0.
    if sn != 0 {
        return Err(MerkleError::Mismatch("proof too short"));
    }
    if fr != *old_root {
        return Err(MerkleError::Mismatch("the old root does not match"));
    }
    if sr != *new_root {
        return Err(MerkleError::Mismatch("the new root does not match"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn h(s: &str) -> Hash {
        let v = hex::decode(s).unwrap();
        v.try_into().unwrap()
    }

    // RFC 6962 test data, as in certificate-transparency-go / transparency-dev/merkle
    // (testonly/constants.go and the merkle tests' consistency vectors).
    const LEAVES: [&str; 8] = [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ];
    const ROOTS: [&str; 9] = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];
    /// (old size, new size, proof)
    const CONSISTENCY: [(u64, u64, &[&str]); 5] = [
        (1, 1, &[]),
        (
            1,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            6,
            8,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            2,
            5,
            &[
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
        (
            6,
            7,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
    ];

    fn vector_tree() -> Tree {
        let leaves: Vec<Vec<u8>> = LEAVES.iter().map(|l| hex::decode(l).unwrap()).collect();
        Tree::from_leaves(leaves.iter().map(|l| l.as_slice()))
    }

    #[test]
    fn roots_match_rfc6962_vectors() {
        let t = vector_tree();
        assert_eq!(EMPTY_ROOT, crate::crypto::sha256(b""));
        let mut f = Frontier::new();
        let mut leaf_hashes = Vec::new();
        assert_eq!(f.root(), h(ROOTS[0]));
        for (size, root) in ROOTS.iter().enumerate() {
            assert_eq!(t.root_at(size as u64).unwrap(), h(root), "size {size}");
            assert_eq!(root_of_leaf_hashes(&leaf_hashes), h(root), "size {size}");
            assert_eq!(f.root(), h(root), "frontier size {size}");
            if let Some(l) = LEAVES.get(size) {
                let leaf = hex::decode(l).unwrap();
                f.push(&leaf);
                leaf_hashes.push(leaf_hash(&leaf));
            }
        }
        assert_eq!(t.root(), h(ROOTS[8]));
        assert!(t.root_at(9).is_err());
    }

    #[test]
    fn consistency_proofs_match_vectors_and_verify() {
        let t = vector_tree();
        for (m, n, proof) in CONSISTENCY {
            let want: Vec<Hash> = proof.iter().map(|p| h(p)).collect();
            assert_eq!(t.consistency_proof(m, n).unwrap(), want, "({m},{n})");
            verify_consistency(m, &h(ROOTS[m as usize]), n, &h(ROOTS[n as usize]), &want)
                .unwrap_or_else(|e| panic!("({m},{n}): {e}"));
        }
    }

    #[test]
    fn edge_cases_of_consistency() {
        let t = vector_tree();
        assert!(t.consistency_proof(0, 5).unwrap().is_empty());
        assert!(t.consistency_proof(5, 5).unwrap().is_empty());
        assert!(t.consistency_proof(6, 5).is_err());
        assert!(t.consistency_proof(2, 9).is_err());
        let r5 = t.root_at(5).unwrap();
        verify_consistency(0, &EMPTY_ROOT, 5, &r5, &[]).unwrap();
        assert!(verify_consistency(0, &r5, 5, &r5, &[]).is_err());
        verify_consistency(5, &r5, 5, &r5, &[]).unwrap();
        assert!(verify_consistency(5, &r5, 5, &EMPTY_ROOT, &[]).is_err());
        assert!(verify_consistency(5, &r5, 5, &r5, &[r5]).is_err());
        assert!(verify_consistency(6, &r5, 5, &r5, &[]).is_err());
        assert!(verify_consistency(3, &t.root_at(3).unwrap(), 5, &r5, &[]).is_err());
        let long = vec![r5; MAX_PROOF_HASHES + 1];
        assert!(verify_consistency(3, &t.root_at(3).unwrap(), 5, &r5, &long).is_err());
    }

    #[test]
    fn frontier_round_trips_through_parts() {
        let mut f = Frontier::new();
        for i in 0u32..37 {
            f.push(&i.to_be_bytes());
        }
        assert_eq!(f.nodes().len(), 37u32.count_ones() as usize);
        let g = Frontier::from_parts(f.size(), f.nodes().to_vec()).unwrap();
        assert_eq!(g.root(), f.root());
        assert!(Frontier::from_parts(39, f.nodes().to_vec()).is_none());
    }

    fn random_tree(n: u64, seed: u64) -> Tree {
        let mut t = Tree::new();
        for i in 0..n {
            t.push(&crate::crypto::sha256(
                &[seed.to_be_bytes(), i.to_be_bytes()].concat(),
            ));
        }
        t
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// proof(m, n) verifies; a flipped bit, a wrong root or a wrong size fails it.
        #[test]
        fn consistency_sound_and_complete(n in 1u64..300, m_frac in 0.0f64..=1.0, seed: u64,
                                          pick: usize, bit in 0usize..256) {
            let t = random_tree(n, seed);
            let m = ((n as f64) * m_frac) as u64;
            let (old, new) = (t.root_at(m).unwrap(), t.root_at(n).unwrap());
            let proof = t.consistency_proof(m, n).unwrap();
            prop_assert!(verify_consistency(m, &old, n, &new, &proof).is_ok());
            prop_assert!(proof.len() <= 2 * 64);
            if !proof.is_empty() {
                let mut bad = proof.clone();
                let i = pick % bad.len();
                bad[i][bit / 8] ^= 1 << (bit % 8);
                prop_assert!(verify_consistency(m, &old, n, &new, &bad).is_err());
                let mut short = proof.clone();
                short.pop();
                prop_assert!(verify_consistency(m, &old, n, &new, &short).is_err());
                let mut long = proof.clone();
                long.push(new);
                prop_assert!(verify_consistency(m, &old, n, &new, &long).is_err());
            }
            if m > 0 {
                // (Every tree extends the empty one: only m > 0 binds the new root.)
                let mut wrong = new;
                wrong[bit / 8] ^= 1 << (bit % 8);
                prop_assert!(verify_consistency(m, &old, n, &wrong, &proof).is_err());
                let mut wrong_old = old;
                wrong_old[bit / 8] ^= 1 << (bit % 8);
                prop_assert!(verify_consistency(m, &wrong_old, n, &new, &proof).is_err());
            }
            // A tree with a different leaf inside the old prefix is not consistent.
            if m > 0 {
                let other = random_tree(n, seed.wrapping_add(1));
                let p2 = other.consistency_proof(m, n).unwrap();
                prop_assert!(verify_consistency(m, &old, n, &other.root_at(n).unwrap(), &p2).is_err());
            }
        }

        #[test]
        fn tree_and_frontier_agree_with_the_definition(n in 0usize..200, seed: u64) {
            let t = random_tree(n as u64, seed);
            let leaves: Vec<Hash> = (0..n as u64).map(|i| t.leaf_hash(i).unwrap()).collect();
            let mut f = Frontier::new();
            for m in 0..=n {
                prop_assert_eq!(t.root_at(m as u64).unwrap(), root_of_leaf_hashes(&leaves[..m]));
                prop_assert_eq!(f.root(), root_of_leaf_hashes(&leaves[..m]));
                if m < n { f.push_leaf_hash(leaves[m]); }
            }
        }
    }

    /// Building a tree of 300 000 leaves is ~600 000 hashes; proofs from any old size are a
    /// few dozen. (A size check, not a timing assertion.)
    #[test]
    fn large_tree_proofs_are_logarithmic() {
        let n = 300_000u64;
        let t = random_tree(n, 7);
        let mut f = Frontier::new();
        for i in 0..n {
            f.push_leaf_hash(t.leaf_hash(i).unwrap());
        }
        assert_eq!(f.root(), t.root());
        for m in [1u64, 2, 1000, 131_072, 299_999] {
            let p = t.consistency_proof(m, n).unwrap();
            assert!(p.len() <= 40, "{m}: {} hashes", p.len());
            verify_consistency(m, &t.root_at(m).unwrap(), n, &t.root(), &p).unwrap();
        }
    }
}
