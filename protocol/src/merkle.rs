//! An append-only Merkle tree over SHA-512, as RFC 9162 (Certificate
//! Transparency 2.0) §2.1 defines it, for DARE Merkle sequences.
//!
//! The reference's Merkle sequence keeps no per-frame digests, so its
//! values are not a tree (research digest §3.5). We keep its frame format
//! and do the tree properly:
//!
//! ```text
//! leaf(d)       = SHA-512(0x00 || d)
//! node(l, r)    = SHA-512(0x01 || l || r)
//! MTH(D[n])     = node(MTH(D[0:k]), MTH(D[k:n])), k the largest power of 2 < n
//! ```
//!
//! Every apex commits to every leaf before it. An inclusion proof shows
//! that a leaf is in a tree of a given apex; a consistency proof shows
//! that a tree is an extension of an earlier one, so a client that
//! remembers an apex can tell an honest service from one that rolled the
//! log back or forked it.

use sha2::{Digest as _, Sha512};

/// A 64-byte digest.
pub type Hash = [u8; 64];

/// The hash of one leaf's data.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha512::new();
    h.update([0x00]);
    h.update(data);
    h.finalize().into()
}

/// The hash of an inner node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha512::new();
    h.update([0x01]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The apex of the empty tree: SHA-512 of nothing.
pub fn empty_root() -> Hash {
    Sha512::digest([]).into()
}

/// A tree being appended to: the roots of its perfect subtrees, largest
/// first (one for each bit set in the size). Appending is amortized O(1),
/// the apex O(log n).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// (height, root) of each perfect subtree, largest first.
    peaks: Vec<(u32, Hash)>,
}

impl Frontier {
    /// An empty tree.
    pub fn new() -> Frontier {
        Frontier::default()
    }

    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Append a leaf by its hash.
    pub fn push(&mut self, leaf: Hash) {
        let mut node = (0u32, leaf);
        while let Some(&(height, left)) = self.peaks.last() {
            if height != node.0 {
                break;
            }
            self.peaks.pop();
            node = (height + 1, node_hash(&left, &node.1));
        }
        self.peaks.push(node);
        self.size += 1;
    }

    /// The apex.
    pub fn root(&self) -> Hash {
        let mut peaks = self.peaks.iter().rev();
        let Some(&(_, mut root)) = peaks.next() else {
            return empty_root();
        };
        for (_, left) in peaks {
            root = node_hash(left, &root);
        }
        root
    }
}

/// The largest power of two below `n` (n ≥ 2).
fn split(n: usize) -> usize {
    let mut k = 1;
    while k << 1 < n {
        k <<= 1;
    }
    k
}

/// The apex of a tree over the given leaf hashes.
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves {
        [] => empty_root(),
        [leaf] => *leaf,
        _ => {
            let (left, right) = leaves.split_at(split(leaves.len()));
            node_hash(&root(left), &root(right))
        }
    }
}

/// The inclusion proof (audit path) of leaf `index` in the tree over
/// `leaves`, or `None` if the index is out of range.
pub fn inclusion_proof(index: usize, leaves: &[Hash]) -> Option<Vec<Hash>> {
    if index >= leaves.len() {
        return None;
    }
    let mut proof = Vec::new();
    path(index, leaves, &mut proof);
    Some(proof)
}

fn path(index: usize, leaves: &[Hash], out: &mut Vec<Hash>) {
    if leaves.len() <= 1 {
        return;
    }
    let k = split(leaves.len());
    let (left, right) = leaves.split_at(k);
    if index < k {
        path(index, left, out);
        out.push(root(right));
    } else {
        path(index - k, right, out);
        out.push(root(left));
    }
}

/// The consistency proof between the first `old_size` leaves and all of
/// `leaves`, or `None` if `old_size` is larger than the tree.
pub fn consistency_proof(old_size: usize, leaves: &[Hash]) -> Option<Vec<Hash>> {
    if old_size > leaves.len() {
        return None;
    }
    let mut proof = Vec::new();
    if old_size > 0 && old_size < leaves.len() {
        subproof(old_size, leaves, true, &mut proof);
    }
    Some(proof)
}

fn subproof(m: usize, leaves: &[Hash], complete: bool, out: &mut Vec<Hash>) {
    let n = leaves.len();
    if m == n {
        if !complete {
            out.push(root(leaves));
        }
        return;
    }
    let k = split(n);
    let (left, right) = leaves.split_at(k);
    if m <= k {
        subproof(m, left, complete, out);
        out.push(root(right));
    } else {
        subproof(m - k, right, false, out);
        out.push(root(left));
    }
}

/// Check an inclusion proof (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if snode == 0 {
            return false;
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    snode == 0 && r == *root
}

/// Check a consistency proof (RFC 9162 §2.1.4.2): the tree of
/// `new_size` leaves and apex `new_root` extends the tree of `old_size`
/// leaves and apex `old_root`.
pub fn verify_consistency(
    old_size: u64,
    old_root: &Hash,
    new_size: u64,
    new_root: &Hash,
    proof: &[Hash],
) -> bool {
    if old_size > new_size {
        return false;
    }
    if old_size == new_size {
        return proof.is_empty() && old_root == new_root;
    }
    if old_size == 0 {
        return proof.is_empty();
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old_size.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    let (mut fnode, mut snode) = (old_size - 1, new_size - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if snode == 0 {
            return false;
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    fr == *old_root && sr == *new_root && snode == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    #[test]
    fn the_frontier_agrees_with_the_recursive_definition() {
        let all = leaves(70);
        let mut frontier = Frontier::new();
        assert_eq!(frontier.root(), root(&[]));
        for n in 1..=all.len() {
            frontier.push(all[n - 1]);
            assert_eq!(frontier.root(), root(&all[..n]), "size {n}");
        }
    }

    #[test]
    fn every_inclusion_proof_verifies_and_no_other() {
        for n in 1..=33 {
            let all = leaves(n);
            let apex = root(&all);
            for i in 0..n {
                let proof = inclusion_proof(i, &all).expect("in range");
                assert!(verify_inclusion(&all[i], i as u64, n as u64, &proof, &apex));
                let other = (i + 1) % n;
                if other != i {
                    assert!(!verify_inclusion(
                        &all[other],
                        i as u64,
                        n as u64,
                        &proof,
                        &apex
                    ));
                }
                assert!(!verify_inclusion(
                    &all[i],
                    i as u64,
                    n as u64,
                    &proof,
                    &leaf_hash(b"x")
                ));
            }
            assert!(inclusion_proof(n, &all).is_none());
        }
    }

    #[test]
    fn every_consistency_proof_verifies_and_forks_do_not() {
        for n in 1..=33 {
            let all = leaves(n);
            let new_root = root(&all);
            for m in 0..=n {
                let proof = consistency_proof(m, &all).expect("in range");
                let old_root = root(&all[..m]);
                assert!(
                    verify_consistency(m as u64, &old_root, n as u64, &new_root, &proof),
                    "{m} of {n}"
                );
                if m > 0 && m < n {
                    // A fork: the old tree had another leaf m-1.
                    let mut forked = all[..m].to_vec();
                    forked[m - 1] = leaf_hash(b"fork");
                    assert!(!verify_consistency(
                        m as u64,
                        &root(&forked),
                        n as u64,
                        &new_root,
                        &proof
                    ));
                    // A rollback: claiming the new tree is the old one.
                    assert!(!verify_consistency(
                        n as u64, &new_root, m as u64, &old_root, &proof
                    ));
                }
            }
        }
    }
}
