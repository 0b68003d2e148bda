//! Changed chunks sent as differences from the chunk they replaced.
//!
//! zstd compresses the new chunk with the old one's plain bytes as a raw-content
//! dictionary ("patch-from"): the unchanged stretches become matches into the base, so a
//! chunk with a small edit costs about the size of the edit. Both sides must hold the
//! base; the receiver names it, the sender uses it only if it holds it too.

use super::wire::ChunkRef;
use hw_offload::ChunkId;
use std::collections::{HashMap, HashSet};

/// zstd level for deltas: the edits are usually incompressible, the matches are what pay.
const DELTA_LEVEL: i32 = 3;

/// `target` coded against `base`.
pub fn encode(base: &[u8], target: &[u8]) -> std::io::Result<Vec<u8>> {
    zstd::bulk::Compressor::with_dictionary(DELTA_LEVEL, base)?.compress(target)
}

/// Decodes [`encode`]'s output; it must expand to exactly `plain_len` bytes.
pub fn decode(base: &[u8], payload: &[u8], plain_len: u32) -> std::io::Result<Vec<u8>> {
    let out = zstd::bulk::Decompressor::with_dictionary(base)?.decompress(payload, plain_len as usize)?;
    if out.len() != plain_len as usize {
        return Err(std::io::Error::other(format!("delta expands to {} bytes, not {plain_len}", out.len())));
    }
    Ok(out)
}

/// For each chunk of `new` in `missing`, the chunk of `old` it most likely replaced.
///
/// Chunks common to both versions anchor the alignment: a missing chunk `k` places after
/// the last common chunk before it is matched with the old chunk `k` places after that
/// chunk's old position. This follows insertions and deletions (which shift offsets),
/// not only overwrites. Before the first anchor, chunks align by index.
pub fn pick_bases(old: &[ChunkRef], new: &[ChunkRef], missing: &HashSet<ChunkId>) -> HashMap<ChunkId, ChunkId> {
    let old_pos: HashMap<ChunkId, usize> = old.iter().enumerate().rev().map(|(i, c)| (c.id, i)).collect();
    let mut bases = HashMap::new();
    // (new index, old index) of the last common chunk seen.
    let mut anchor: Option<(usize, usize)> = None;
    for (j, c) in new.iter().enumerate() {
        if let Some(&i) = old_pos.get(&c.id) {
            anchor = Some((j, i));
            continue;
        }
        if !missing.contains(&c.id) || bases.contains_key(&c.id) {
            continue;
        }
        let guess = match anchor {
            Some((aj, ai)) => ai + (j - aj),
            None => j,
        };
        if let Some(base) = old.get(guess) {
            bases.insert(c.id, base.id);
        }
    }
    bases
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(names: &[&str]) -> Vec<ChunkRef> {
        names.iter().map(|n| ChunkRef { id: ChunkId::of(n.as_bytes()), len: 1 }).collect()
    }

    #[test]
    fn a_small_edit_costs_about_its_size() {
        // Incompressible bytes, like the scientific data the delta is for.
        let mut base = vec![0u8; 65536];
        rand::Rng::fill(&mut rand::thread_rng(), &mut base[..]);
        let mut target = base.clone();
        target[30000..30100].iter_mut().for_each(|b| *b ^= 0x5a);
        let delta = encode(&base, &target).unwrap();
        assert!(delta.len() < 400, "delta of a 100-byte edit is {} bytes", delta.len());
        assert_eq!(decode(&base, &delta, target.len() as u32).unwrap(), target);
        // The wrong base, or a wrong length, does not decode to the target.
        assert!(decode(&base, &delta, target.len() as u32 - 1).is_err());
        let other = vec![0u8; 65536];
        assert_ne!(decode(&other, &delta, target.len() as u32).ok(), Some(target));
    }

    #[test]
    fn bases_follow_overwrites_and_shifts() {
        let old = refs(&["a", "b", "c", "d", "e"]);
        // Overwrite of c; insertion that split d into x, y (shift after it).
        let new = refs(&["a", "b", "C", "x", "y", "e"]);
        let missing: HashSet<ChunkId> = refs(&["C", "x", "y"]).iter().map(|c| c.id).collect();
        let bases = pick_bases(&old, &new, &missing);
        assert_eq!(bases[&new[2].id], old[2].id);
        assert_eq!(bases[&new[3].id], old[3].id);
        assert_eq!(bases[&new[4].id], old[4].id);
        // A changed first chunk aligns by index.
        let new = refs(&["A", "b", "c"]);
        let missing: HashSet<ChunkId> = [new[0].id].into();
        assert_eq!(pick_bases(&old, &new, &missing)[&new[0].id], old[0].id);
    }
}
