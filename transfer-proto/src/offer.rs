//! The sender's side of offers: cutting a stream of objects into offers that respect the
//! protocol's bounds. The driver supplies the objects (from its store); this decides what
//! goes into each offer, so that every peer cuts the same way and tests need no store.

use crate::wire::{ChunkRef, OFFER_MAX_CHUNKS, OFFER_MAX_OBJECTS, OfferedObject};
use bytes::Bytes;
use hw_offload::ChunkId;
use std::collections::HashMap;

/// Inline object bytes carried by one offer, at most (one offer is built in memory and
/// answered before the next is sent, so this bounds what the receiver holds at once).
pub const OFFER_MAX_INLINE_BYTES: usize = 8 << 20;

/// One object as the sender's store exports it.
#[derive(Debug, Clone)]
pub struct SourceObject {
    /// Its head (key relative to the source prefix, size, ETag, ...), chunk list empty.
    pub head: OfferedObject,
    /// Its chunks in order; for an inline object, the one pseudo-chunk of its bytes.
    pub chunks: Vec<ChunkRef>,
    /// An inline object's bytes (they are in no pack, so they travel with the offer).
    pub inline: Option<Bytes>,
}

/// One offer: its entries and the inline bytes of the objects among them, by chunk id.
#[derive(Debug, Default)]
pub struct Offer {
    /// The entries, in order: whole objects, or slices of a long chunk list.
    pub objects: Vec<OfferedObject>,
    /// Inline objects' bytes.
    pub inline: HashMap<ChunkId, Bytes>,
}

/// Cuts objects into offers of at most [`OFFER_MAX_OBJECTS`] entries,
/// [`OFFER_MAX_CHUNKS`] chunks and about [`OFFER_MAX_INLINE_BYTES`] inline bytes; an
/// object with more chunks than fit is continued in the next offers.
#[derive(Debug, Default)]
pub struct OfferCutter {
    /// The rest of a long object's chunk list, with its head.
    open: Option<(OfferedObject, Vec<ChunkRef>)>,
}

impl OfferCutter {
    /// A cutter with nothing pending.
    pub fn new() -> Self {
        Self::default()
    }

    /// The next offer, pulling objects from `next_object` as room allows; an empty offer
    /// when every object has been offered.
    pub fn next_offer<E>(
        &mut self,
        mut next_object: impl FnMut() -> Result<Option<SourceObject>, E>,
    ) -> Result<Offer, E> {
        let mut offer = Offer::default();
        let mut chunks = 0usize;
        let mut inline_bytes = 0usize;
        loop {
            if let Some((head, rest)) = self.open.take() {
                let room = OFFER_MAX_CHUNKS - chunks;
                let (now, later) = if rest.len() > room { rest.split_at(room) } else { (&rest[..], &[][..]) };
                let mut entry = head.clone();
                entry.chunks = now.to_vec();
                entry.last = later.is_empty();
                chunks += now.len();
                offer.objects.push(entry);
                if !later.is_empty() {
                    let mut head = head;
                    head.first_chunk += now.len() as u64;
                    self.open = Some((head, later.to_vec()));
                    return Ok(offer);
                }
            }
            if offer.objects.len() >= OFFER_MAX_OBJECTS
                || chunks >= OFFER_MAX_CHUNKS
                || inline_bytes >= OFFER_MAX_INLINE_BYTES
            {
                return Ok(offer);
            }
            let Some(object) = next_object()? else { return Ok(offer) };
            if let (Some(data), Some(c)) = (&object.inline, object.chunks.first()) {
                inline_bytes += data.len();
                offer.inline.insert(c.id, data.clone());
            }
            let mut head = object.head;
            head.first_chunk = 0;
            head.chunks = Vec::new();
            head.last = false;
            self.open = Some((head, object.chunks));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::Receiver;

    fn object(key: &str, chunks: usize, seed: u8) -> SourceObject {
        let chunks = (0..chunks)
            .map(|i| {
                let mut id = [seed; 32];
                id[..8].copy_from_slice(&(i as u64).to_be_bytes());
                ChunkRef { id: ChunkId(id), len: 1 }
            })
            .collect::<Vec<_>>();
        SourceObject {
            head: OfferedObject {
                key: key.into(),
                size: chunks.len() as u64,
                etag: String::new(),
                checksums: Vec::new(),
                mtime_ms: 0,
                meta: Vec::new(),
                part_sizes: Vec::new(),
                first_chunk: 0,
                chunks: Vec::new(),
                last: false,
            },
            chunks,
            inline: None,
        }
    }

    /// Offers everything and feeds it to a receiver; returns the offers' sizes in chunks.
    fn offer_all(objects: Vec<SourceObject>) -> (Vec<usize>, Receiver) {
        let mut source = objects.into_iter();
        let mut cutter = OfferCutter::new();
        let mut receiver = Receiver::new();
        let mut sizes = Vec::new();
        for seq in 0.. {
            let offer = cutter.next_offer(|| Ok::<_, ()>(source.next())).unwrap();
            if offer.objects.is_empty() {
                receiver.on_offer_done(seq).unwrap();
                break;
            }
            sizes.push(offer.objects.iter().map(|o| o.chunks.len()).sum());
            receiver.on_offer(seq, offer.objects).unwrap();
        }
        (sizes, receiver)
    }

    #[test]
    fn a_long_chunk_list_continues_across_offers_and_reassembles() {
        let long = OFFER_MAX_CHUNKS * 2 + 5;
        let (sizes, receiver) = offer_all(vec![object("a", 3, 1), object("big", long, 2), object("z", 1, 3)]);
        // "a" and the head of "big" fill the first offer; the tail of "big" shares the last with "z".
        assert_eq!(sizes, vec![OFFER_MAX_CHUNKS, OFFER_MAX_CHUNKS, long + 3 - 2 * OFFER_MAX_CHUNKS + 1]);
        let objects = receiver.objects();
        assert_eq!(objects.iter().map(|o| o.head.key.as_str()).collect::<Vec<_>>(), ["a", "big", "z"]);
        assert_eq!(objects[1].chunks.len(), long);
        assert!(objects.iter().all(|o| o.complete));
    }

    #[test]
    fn many_small_objects_fill_offers_to_the_object_bound() {
        let objects = (0..OFFER_MAX_OBJECTS + 10).map(|i| object(&format!("k{i:06}"), 0, 9)).collect();
        let mut source: std::vec::IntoIter<SourceObject> = Vec::into_iter(objects);
        let mut cutter = OfferCutter::new();
        let first = cutter.next_offer(|| Ok::<_, ()>(source.next())).unwrap();
        assert_eq!(first.objects.len(), OFFER_MAX_OBJECTS);
        assert_eq!(cutter.next_offer(|| Ok::<_, ()>(source.next())).unwrap().objects.len(), 10);
        assert!(cutter.next_offer(|| Ok::<_, ()>(source.next())).unwrap().objects.is_empty());
    }

    #[test]
    fn inline_bytes_travel_with_their_offer_and_bound_it() {
        let big = Bytes::from(vec![7u8; OFFER_MAX_INLINE_BYTES / 2]);
        let mut objects: Vec<SourceObject> = (0..3u8).map(|i| object(&format!("i{i}"), 1, 20 + i)).collect();
        for o in &mut objects {
            o.inline = Some(big.clone());
        }
        let mut source = objects.into_iter();
        let mut cutter = OfferCutter::new();
        let first = cutter.next_offer(|| Ok::<_, ()>(source.next())).unwrap();
        assert_eq!(first.objects.len(), 2, "the second inline object reaches the bound");
        assert_eq!(first.inline.len(), 2);
        assert_eq!(cutter.next_offer(|| Ok::<_, ()>(source.next())).unwrap().inline.len(), 1);
    }

    #[test]
    fn a_source_error_ends_the_offer_with_it() {
        let mut cutter = OfferCutter::new();
        assert_eq!(cutter.next_offer(|| Err::<Option<SourceObject>, _>("disk")).unwrap_err(), "disk");
    }
}
