//! Changed chunks sent as differences from the chunks they replaced.
//!
//! zstd compresses the new chunk with the old chunks' plain bytes, concatenated, as a
//! raw-content prefix ("patch-from"): the unchanged stretches become matches into the
//! bases, so a chunk with a small edit costs about the size of the edit. Several bases
//! because an edit moves chunk boundaries: a new chunk can span the tail of one old chunk
//! and the head of the next, and each part must find its match. Both sides must hold the
//! bases; the receiver names them, the sender uses those it holds too.

use super::session::Violation;
use super::wire::{ChunkRef, MAX_DELTA_BASES};
use hw_offload::ChunkId;
use std::collections::{HashMap, HashSet};

/// zstd level for deltas: the edits are usually incompressible, the matches are what pay.
const DELTA_LEVEL: i32 = 3;

/// `target` coded against `bases`, in that order.
pub fn encode(bases: &[&[u8]], target: &[u8]) -> std::io::Result<Vec<u8>> {
    let prefix = bases.concat();
    let mut cctx = zstd::zstd_safe::CCtx::create();
    cctx.set_parameter(zstd::zstd_safe::CParameter::CompressionLevel(DELTA_LEVEL)).map_err(zstd_error)?;
    // The window must reach back over the whole prefix, or matches into the first bases
    // are lost; zstd's defaults size it for the target alone.
    cctx.set_parameter(zstd::zstd_safe::CParameter::WindowLog(window_log(prefix.len() + target.len())))
        .map_err(zstd_error)?;
    // A prefix is always raw content, unlike a dictionary, which zstd would parse as a
    // trained dictionary when its first bytes happen to be the dictionary magic.
    cctx.ref_prefix(&prefix).map_err(zstd_error)?;
    let mut out = Vec::with_capacity(zstd::zstd_safe::compress_bound(target.len()));
    cctx.compress2(&mut out, target).map_err(zstd_error)?;
    Ok(out)
}

/// Decodes [`encode`]'s output; it must expand to exactly `plain_len` bytes.
pub fn decode(bases: &[&[u8]], payload: &[u8], plain_len: u32) -> std::io::Result<Vec<u8>> {
    let prefix = bases.concat();
    let mut dctx = zstd::zstd_safe::DCtx::create();
    dctx.ref_prefix(&prefix).map_err(zstd_error)?;
    // Room for exactly the announced length: a longer output fails instead of growing.
    let mut out = Vec::with_capacity(plain_len as usize);
    dctx.decompress(&mut out, payload).map_err(zstd_error)?;
    if out.len() != plain_len as usize {
        return Err(std::io::Error::other(format!("delta expands to {} bytes, not {plain_len}", out.len())));
    }
    Ok(out)
}

/// The smallest window (log2, within zstd's bounds) that covers `len` bytes.
fn window_log(len: usize) -> u32 {
    (usize::BITS - len.max(1).saturating_sub(1).leading_zeros()).clamp(10, 27)
}

fn zstd_error(code: usize) -> std::io::Error {
    std::io::Error::other(zstd::zstd_safe::get_error_name(code))
}

/// For each chunk of `new` in `missing`, the chunks of `old` it most likely replaced (at
/// most [`MAX_DELTA_BASES`], in their order in `old`).
///
/// Chunks common to both versions anchor the alignment. Between two anchors, the run of
/// new chunks replaced the run of old chunks between the same anchors; each new chunk is
/// matched by byte offset with the old chunks it overlaps, measured from the left anchor
/// (edits before it were overwrites) and from the right one (an insertion or deletion
/// before it shifted it), so that both overwrites and shifts find their old bytes.
pub fn pick_bases(old: &[ChunkRef], new: &[ChunkRef], missing: &HashSet<ChunkId>) -> HashMap<ChunkId, Vec<ChunkId>> {
    let old_pos: HashMap<ChunkId, usize> = old.iter().enumerate().rev().map(|(i, c)| (c.id, i)).collect();
    let mut bases = HashMap::new();
    let mut j = 0;
    // Old index just after the last anchor.
    let mut old_from = 0;
    while j < new.len() {
        if let Some(&i) = old_pos.get(&new[j].id) {
            old_from = i + 1;
            j += 1;
            continue;
        }
        // A run of new chunks the old version lacks, up to the next anchor.
        let run_end = (j..new.len()).find(|&k| old_pos.contains_key(&new[k].id)).unwrap_or(new.len());
        let old_to = match new.get(run_end) {
            Some(anchor) if old_pos[&anchor.id] >= old_from => old_pos[&anchor.id],
            // Reordered (the next anchor lies before the last one): look as far ahead as
            // the run is long.
            Some(_) => (old_from + (run_end - j)).min(old.len()),
            None => old.len(),
        };
        place_run(&old[old_from..old_to.clamp(old_from, old.len())], &new[j..run_end], missing, &mut bases);
        j = run_end;
    }
    bases
}

/// Bases for one run of `new` chunks that replaced the run `old`.
fn place_run(
    old: &[ChunkRef],
    new: &[ChunkRef],
    missing: &HashSet<ChunkId>,
    bases: &mut HashMap<ChunkId, Vec<ChunkId>>,
) {
    if old.is_empty() {
        return;
    }
    let mut old_starts = Vec::with_capacity(old.len() + 1);
    let mut at = 0i64;
    for c in old {
        old_starts.push(at);
        at += c.len as i64;
    }
    old_starts.push(at);
    let old_len = at;
    let new_len: i64 = new.iter().map(|c| c.len as i64).sum();
    // How far bytes after an insertion (or deletion) moved: new offset - old offset.
    let shift = new_len - old_len;
    let overlap = |i: usize, (lo, hi): (i64, i64)| (hi.min(old_starts[i + 1]) - lo.max(old_starts[i])).max(0);
    let mut at = 0i64;
    for c in new {
        let left = (at, at + c.len as i64);
        let right = (left.0 - shift, left.1 - shift);
        at = left.1;
        if !missing.contains(&c.id) || bases.contains_key(&c.id) {
            continue;
        }
        // Old chunks under the new one aligned from the left anchor or from the right one,
        // the better alignment of each counting. Each window is one chunk wide: a binary
        // search and a few steps, however far apart the two alignments are.
        let under = |(lo, hi): (i64, i64)| {
            let first = old_starts.partition_point(|&s| s <= lo).saturating_sub(1);
            first..(first..old.len()).find(|&i| old_starts[i] >= hi).unwrap_or(old.len())
        };
        let (l, r) = (under(left), under(right));
        let mut picked: Vec<(i64, usize)> = l
            .clone()
            .chain(r.filter(|i| !l.contains(i)))
            .map(|i| (overlap(i, left).max(overlap(i, right)), i))
            .filter(|&(bytes, _)| bytes > 0)
            .collect();
        if picked.is_empty() {
            // Beyond the old run (an insertion grew it): the nearest old chunk.
            picked.push((0, if left.0.min(right.0) >= old_len { old.len() - 1 } else { 0 }));
        }
        // Keep the largest overlaps, in their order in the old version.
        picked.sort_by_key(|&(bytes, _)| std::cmp::Reverse(bytes));
        picked.truncate(MAX_DELTA_BASES);
        picked.sort_by_key(|&(_, i)| i);
        bases.insert(c.id, picked.into_iter().map(|(_, i)| old[i].id).collect());
    }
}

/// The receiver's choice of delta bases for the chunks it is about to ask for: each
/// missing chunk of an object offered just now is matched against the chunks of the
/// object the destination holds at the same key (`old_chunks_of`, the driver's store
/// lookup; empty when there is none). Missing chunks are in the objects offered last,
/// so the walk goes backwards and stops once every one is placed.
pub fn bases_for_missing<O, E>(
    objects: &[O],
    chunks_of: impl Fn(&O) -> &[ChunkRef],
    missing: &[ChunkRef],
    mut old_chunks_of: impl FnMut(&O) -> Result<Vec<ChunkRef>, E>,
) -> Result<HashMap<ChunkId, Vec<ChunkId>>, E> {
    let mut bases = HashMap::new();
    let mut todo: HashSet<ChunkId> = missing.iter().map(|c| c.id).collect();
    for o in objects.iter().rev() {
        if todo.is_empty() {
            break;
        }
        let chunks = chunks_of(o);
        let here: HashSet<ChunkId> = chunks.iter().map(|c| c.id).filter(|id| todo.contains(id)).collect();
        if here.is_empty() {
            continue;
        }
        for id in &here {
            todo.remove(id);
        }
        let old = old_chunks_of(o)?;
        if !old.is_empty() {
            bases.extend(pick_bases(&old, chunks, &here));
        }
    }
    Ok(bases)
}

/// The delta bases the receiver suggested, by chunk: a chunk may come as a delta only
/// against bases named for it, so a sender cannot make the receiver read (and reveal
/// through timing or errors) chunks it chose itself.
#[derive(Debug, Default)]
pub struct SuggestedBases {
    by_chunk: HashMap<ChunkId, Vec<ChunkId>>,
}

impl SuggestedBases {
    /// Records the bases suggested for `id` in a `Need`.
    pub fn suggest(&mut self, id: ChunkId, bases: Vec<ChunkId>) {
        if !bases.is_empty() {
            self.by_chunk.insert(id, bases);
        }
    }

    /// Whether chunk `id` may come as a delta against `bases`.
    pub fn check(&self, id: &ChunkId, bases: &[ChunkId]) -> Result<(), Violation> {
        let allowed = self.by_chunk.get(id).is_some_and(|ok| bases.iter().all(|b| ok.contains(b)));
        if allowed {
            Ok(())
        } else {
            Err(Violation(format!("chunk {id} came as a delta against bases this site did not suggest")))
        }
    }

    /// Chunk `id` arrived: its suggestion is spent.
    pub fn settled(&mut self, id: &ChunkId) {
        self.by_chunk.remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random(len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        rand::Rng::fill(&mut rand::thread_rng(), &mut out[..]);
        out
    }

    /// Chunk references named `name` with the given lengths.
    fn refs(chunks: &[(&str, u32)]) -> Vec<ChunkRef> {
        chunks.iter().map(|(n, len)| ChunkRef { id: ChunkId::of(n.as_bytes()), len: *len }).collect()
    }

    fn ids(chunks: &[ChunkRef]) -> Vec<ChunkId> {
        chunks.iter().map(|c| c.id).collect()
    }

    #[test]
    fn a_small_edit_costs_about_its_size() {
        // Incompressible bytes, like the scientific data the delta is for.
        let base = random(65536);
        let mut target = base.clone();
        target[30000..30100].iter_mut().for_each(|b| *b ^= 0x5a);
        let delta = encode(&[&base], &target).unwrap();
        assert!(delta.len() < 400, "delta of a 100-byte edit is {} bytes", delta.len());
        assert_eq!(decode(&[&base], &delta, target.len() as u32).unwrap(), target);
        // The wrong base, or a wrong length, does not decode to the target.
        assert!(decode(&[&base], &delta, target.len() as u32 - 1).is_err());
        let other = vec![0u8; 65536];
        assert_ne!(decode(&[&other], &delta, target.len() as u32).ok(), Some(target));
    }

    #[test]
    fn a_chunk_spanning_two_old_ones_matches_both() {
        // An edit removed the boundary between two old chunks: the new chunk is the tail
        // of the first, the edit, and the head of the second.
        let (first, second) = (random(200_000), random(200_000));
        let edit = random(1000);
        let target = [&first[150_000..], &edit[..], &second[..60_000]].concat();
        let whole_first = encode(&[&first], &target).unwrap();
        let both = encode(&[&first, &second], &target).unwrap();
        assert!(both.len() < 1500, "delta against both bases is {} bytes", both.len());
        assert!(whole_first.len() > 60_000, "one base leaves the second part literal");
        assert_eq!(decode(&[&first, &second], &both, target.len() as u32).unwrap(), target);
        // The bases in another order are another prefix.
        assert_ne!(decode(&[&second, &first], &both, target.len() as u32).ok(), Some(target));
    }

    #[test]
    fn bases_are_raw_content_even_when_they_look_like_a_dictionary() {
        // zstd's trained-dictionary magic at the start of a base.
        let mut base = random(4096);
        base[..4].copy_from_slice(&0xEC30A437u32.to_le_bytes());
        let mut target = base.clone();
        target[100] ^= 1;
        let delta = encode(&[&base], &target).unwrap();
        assert_eq!(decode(&[&base], &delta, target.len() as u32).unwrap(), target);
    }

    #[test]
    fn bases_follow_overwrites() {
        let old = refs(&[("a", 100), ("b", 100), ("c", 100), ("d", 100), ("e", 100)]);
        // c overwritten in place; d and e merged by an edit across their boundary.
        let new = refs(&[("a", 100), ("b", 100), ("C", 100), ("DE", 200)]);
        let missing: HashSet<ChunkId> = ids(&new[2..]).into_iter().collect();
        let bases = pick_bases(&old, &new, &missing);
        assert_eq!(bases[&new[2].id], vec![old[2].id]);
        assert_eq!(bases[&new[3].id], vec![old[3].id, old[4].id]);
        // An edit that split c: both halves take c.
        let new = refs(&[("a", 100), ("b", 100), ("c1", 40), ("c2", 60), ("d", 100), ("e", 100)]);
        let missing: HashSet<ChunkId> = ids(&new[2..4]).into_iter().collect();
        let bases = pick_bases(&old, &new, &missing);
        assert_eq!(bases[&new[2].id], vec![old[2].id]);
        assert_eq!(bases[&new[3].id], vec![old[2].id]);
        // A changed first chunk, and chunks the receiver holds anyway, get no others.
        let new = refs(&[("A", 100), ("b", 100), ("c", 100)]);
        let bases = pick_bases(&old, &new, &[new[0].id].into());
        assert_eq!(bases.len(), 1);
        assert_eq!(bases[&new[0].id], vec![old[0].id]);
    }

    #[test]
    fn bases_follow_shifts() {
        let old = refs(&[("a", 100), ("b", 100), ("c", 100), ("d", 100), ("e", 100)]);
        // 50 bytes inserted early in b: b and c re-chunked into three chunks. Aligned from
        // the left, C would sit half over c and half past the run; from the right, on c.
        let new = refs(&[("a", 100), ("B1", 30), ("B2", 120), ("C", 100), ("d", 100), ("e", 100)]);
        let missing: HashSet<ChunkId> = ids(&new[1..4]).into_iter().collect();
        let bases = pick_bases(&old, &new, &missing);
        assert_eq!(bases[&new[1].id], vec![old[1].id]);
        assert_eq!(bases[&new[2].id], vec![old[1].id, old[2].id]);
        assert_eq!(bases[&new[3].id], vec![old[2].id]);
        // Appended bytes: the old last chunk was cut at the end of the file, so it changed
        // too, and both new chunks take it.
        let new = refs(&[("a", 100), ("b", 100), ("c", 100), ("d", 100), ("E", 100), ("f", 100)]);
        let bases = pick_bases(&old, &new, &ids(&new[4..]).into_iter().collect());
        assert_eq!(bases[&new[4].id], vec![old[4].id]);
        assert_eq!(bases[&new[5].id], vec![old[4].id]);
    }

    #[test]
    fn at_most_max_bases() {
        let old: Vec<ChunkRef> = (0..20).map(|i| ChunkRef { id: ChunkId::of(&[i]), len: 10 }).collect();
        let new = refs(&[("whole", 200)]);
        let bases = pick_bases(&old, &new, &[new[0].id].into());
        assert_eq!(bases[&new[0].id].len(), MAX_DELTA_BASES);
    }

    fn same_len(ids: &[u8]) -> Vec<ChunkRef> {
        ids.iter().map(|&i| ChunkRef { id: ChunkId([i; 32]), len: 100 }).collect()
    }

    #[test]
    fn bases_come_from_the_old_object_at_the_same_key_only_for_missing_chunks() {
        // Two objects offered; the second was edited in its middle chunk (3 -> 9).
        let objects = vec![("a", same_len(&[1, 2])), ("b", same_len(&[4, 9, 6]))];
        let missing = same_len(&[9]);
        let mut looked_up = Vec::new();
        let bases = bases_for_missing(
            &objects,
            |o| &o.1[..],
            &missing,
            |o| {
                looked_up.push(o.0);
                Ok::<_, ()>(if o.0 == "b" { same_len(&[4, 3, 6]) } else { Vec::new() })
            },
        )
        .unwrap();
        assert_eq!(looked_up, ["b"], "objects without missing chunks are not looked up");
        assert_eq!(bases.get(&ChunkId([9; 32])), Some(&vec![ChunkId([3; 32])]));
    }

    #[test]
    fn nothing_missing_means_no_lookup() {
        let objects = vec![("a", same_len(&[1]))];
        let bases = bases_for_missing(&objects, |o| &o.1[..], &[], |_| Err::<Vec<ChunkRef>, _>("no store")).unwrap();
        assert!(bases.is_empty());
    }

    #[test]
    fn only_suggested_bases_are_accepted_and_only_until_the_chunk_arrives() {
        let (wanted, base, other) = (ChunkId([1; 32]), ChunkId([2; 32]), ChunkId([3; 32]));
        let mut suggested = SuggestedBases::default();
        assert!(suggested.check(&wanted, &[base]).is_err(), "nothing suggested yet");
        suggested.suggest(wanted, vec![base]);
        suggested.check(&wanted, &[base]).unwrap();
        assert!(suggested.check(&wanted, &[base, other]).is_err());
        assert!(suggested.check(&other, &[base]).is_err());
        suggested.settled(&wanted);
        assert!(suggested.check(&wanted, &[base]).is_err());
    }
}
