//! Merkle trees over a batch's digests, as Certificate Transparency builds them (RFC 9162 §2.1):
//! one signature covers a whole batch, and each member keeps an inclusion path that leads from
//! its leaf to the signed root, so a proof still stands for one message alone.
//!
//! Leaf hash `SHA-256(0x00 || data)`, interior node `SHA-256(0x01 || left || right)`; a tree of
//! `n` leaves splits at the largest power of two below `n`. The 0x00/0x01 prefixes keep a leaf
//! from ever passing as an interior node (second-preimage attacks on the tree).
//!
//! **Boundary:** pure hashing over bytes; never signs, never reads files.

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// The hash of a leaf holding `data`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    context.update(&[0]);
    context.update(data);
    finish(context)
}

/// The hash of an interior node over its two children.
fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    context.update(&[1]);
    context.update(left);
    context.update(right);
    finish(context)
}

fn finish(context: ring::digest::Context) -> Hash {
    let mut out = [0u8; 32];
    out.copy_from_slice(context.finish().as_ref());
    out
}

/// The largest power of two strictly below `n` (n ≥ 2).
fn split(n: usize) -> usize {
    let mut k = 1;
    while k << 1 < n {
        k <<= 1;
    }
    k
}

/// The root over `leaves` (leaf hashes) and, for every leaf, its inclusion path (sibling hashes
/// from the leaf up). `None` for an empty batch.
pub fn tree(leaves: &[Hash]) -> Option<(Hash, Vec<Vec<Hash>>)> {
    if leaves.is_empty() {
        return None;
    }
    let mut paths = vec![Vec::new(); leaves.len()];
    let root = subtree(leaves, &mut paths);
    Some((root, paths))
}

/// Hashes `leaves` into their subtree root, appending each leaf's siblings to `paths` (which
/// has one entry per leaf of this subtree) bottom up.
fn subtree(leaves: &[Hash], paths: &mut [Vec<Hash>]) -> Hash {
    if leaves.len() == 1 {
        return leaves[0];
    }
    let k = split(leaves.len());
    let (left_paths, right_paths) = paths.split_at_mut(k);
    let left = subtree(&leaves[..k], left_paths);
    let right = subtree(&leaves[k..], right_paths);
    // Siblings are appended after the deeper ones, so each path reads from the leaf upwards.
    for path in left_paths.iter_mut() {
        path.push(right);
    }
    for path in right_paths.iter_mut() {
        path.push(left);
    }
    node_hash(&left, &right)
}

/// Why an inclusion path does not lead anywhere.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The leaf index is not below the tree size.
    #[error("leaf index {index} is not inside a tree of {size} leaves")]
    IndexOutOfRange {
        /// The leaf index given.
        index: u64,
        /// The tree size given.
        size: u64,
    },
    /// The path has more or fewer steps than a tree of this size has for this leaf.
    #[error("a path for leaf {index} of {size} has a different number of steps than {given}")]
    WrongLength {
        /// The leaf index given.
        index: u64,
        /// The tree size given.
        size: u64,
        /// The number of steps given.
        given: usize,
    },
}

/// The root that `path` leads to from `leaf` at `index` in a tree of `size` leaves (RFC 9162
/// §2.1.3.2); the caller compares it with the signed root.
pub fn root_from_path(leaf: &Hash, index: u64, size: u64, path: &[Hash]) -> Result<Hash, PathError> {
    if index >= size {
        return Err(PathError::IndexOutOfRange { index, size });
    }
    let wrong_length = || PathError::WrongLength { index, size, given: path.len() };
    let (mut fn_, mut sn) = (index, size - 1);
    let mut root = *leaf;
    for step in path {
        if sn == 0 {
            return Err(wrong_length());
        }
        if fn_ & 1 == 1 || fn_ == sn {
            root = node_hash(step, &root);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            root = node_hash(&root, step);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(wrong_length());
    }
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&(i as u64).to_be_bytes())).collect()
    }

    /// The tree hash by RFC 9162's recursive definition, independently of `tree`.
    fn reference_root(leaves: &[Hash]) -> Hash {
        if leaves.len() == 1 {
            return leaves[0];
        }
        let k = split(leaves.len());
        node_hash(&reference_root(&leaves[..k]), &reference_root(&leaves[k..]))
    }

    #[test]
    fn every_leaf_of_every_size_leads_to_the_root_and_nowhere_else() {
        for n in 1..=40 {
            let leaves = leaves(n);
            let (root, paths) = tree(&leaves).unwrap();
            assert_eq!(root, reference_root(&leaves), "size {n}");
            for (i, path) in paths.iter().enumerate() {
                let (i, size) = (i as u64, n as u64);
                assert_eq!(root_from_path(&leaves[i as usize], i, size, path), Ok(root), "{i}/{n}");
                // Another leaf, index, size or step leads elsewhere or is refused.
                let other = leaf_hash(b"other");
                assert_ne!(root_from_path(&other, i, size, path), Ok(root));
                if n > 1 {
                    assert_ne!(root_from_path(&leaves[i as usize], (i + 1) % size, size, path), Ok(root));
                    let mut bent = path.clone();
                    bent[0][0] ^= 1;
                    assert_ne!(root_from_path(&leaves[i as usize], i, size, &bent), Ok(root));
                    let short = &path[..path.len() - 1];
                    assert!(root_from_path(&leaves[i as usize], i, size, short).is_err());
                }
                let mut long = path.clone();
                long.push(root);
                assert!(root_from_path(&leaves[i as usize], i, size, &long).is_err());
            }
        }
        assert_eq!(
            root_from_path(&leaves(1)[0], 1, 1, &[]),
            Err(PathError::IndexOutOfRange { index: 1, size: 1 })
        );
        assert!(tree(&[]).is_none());
    }

    #[test]
    fn a_leaf_never_passes_as_an_interior_node() {
        let leaves = leaves(2);
        let (root, _) = tree(&leaves).unwrap();
        let mut concatenated = leaves[0].to_vec();
        concatenated.extend_from_slice(&leaves[1]);
        assert_ne!(leaf_hash(&concatenated), root);
    }

    #[test]
    fn the_root_of_known_data_is_rfc_9162s() {
        // The empty-leaf hash of RFC 6962's test vectors: SHA-256(0x00).
        assert_eq!(
            hex::encode(leaf_hash(b"")),
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
        );
    }
}
