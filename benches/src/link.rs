//! The pure parts of `linkem`, the userspace WAN link emulator: no sockets, no clock. Time is
//! an input in nanoseconds, so every rule here is tested deterministically.
//!
//! - [`LossSampler`]: seeded Bernoulli loss, one independent stream per direction;
//! - [`Serializer`]: a link of fixed bandwidth with a bounded output queue that drops at the
//!   tail, like a router port (a token bucket whose burst is one frame);
//! - [`FrameRing`]: the FIFO of frames in flight (queued or on the wire) with their delivery
//!   times, in preallocated slots so forwarding allocates nothing per frame.

use rand::{Rng, SeedableRng};

/// Bytes per frame slot: an Ethernet frame at MTU 1500 is 1514 bytes (no FCS on veth); a
/// larger frame means segmentation offload is still on and is reported, not forwarded.
pub const SLOT_BYTES: usize = 2048;

/// Random loss, independent per packet with probability `p`, reproducible from a seed.
#[derive(Debug)]
pub struct LossSampler {
    rng: rand::rngs::StdRng,
    probability: f64,
}

impl LossSampler {
    /// A sampler dropping each packet with `probability` (0 ≤ p ≤ 1); `stream` separates the
    /// two directions of one link so they do not lose the same packet numbers.
    pub fn new(seed: u64, stream: u64, probability: f64) -> Self {
        assert!((0.0..=1.0).contains(&probability), "loss probability {probability} outside 0..=1");
        // Mixing the stream into the seed (rather than seeding with seed + stream) keeps
        // (seed 1, stream 0) and (seed 0, stream 1) apart.
        let mixed = seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        Self { rng: rand::rngs::StdRng::seed_from_u64(mixed), probability }
    }

    /// Whether the next packet is lost. Draws even when p = 0, so that the sequence of
    /// decisions for a seed does not depend on earlier packets' probabilities.
    pub fn lose(&mut self) -> bool {
        let draw: f64 = self.rng.r#gen();
        draw < self.probability
    }
}

/// A link of `rate_bps` with a bounded FIFO in front of it.
///
/// A frame admitted at `now` starts serializing when the link is free and finishes
/// `len × 8 / rate` later; the bytes still waiting ahead of it are the queue. A frame that would
/// make the queue exceed `queue_bytes` is dropped at the tail.
#[derive(Debug, Clone)]
pub struct Serializer {
    rate_bps: Option<u64>,
    queue_bytes: u64,
    /// when the last admitted frame finishes serializing, ns
    link_free_at_ns: u64,
}

impl Serializer {
    /// `rate_bps = None` is an unlimited link (no queue, frames leave when they arrive).
    pub fn new(rate_bps: Option<u64>, queue_bytes: u64) -> Self {
        assert!(rate_bps != Some(0), "a link rate of 0 forwards nothing: use None for unlimited");
        Self { rate_bps, queue_bytes, link_free_at_ns: 0 }
    }

    /// Nanoseconds a frame of `len` bytes occupies the link.
    pub fn serialization_ns(&self, len: usize) -> u64 {
        match self.rate_bps {
            None => 0,
            Some(rate) => ((len as u128 * 8 * 1_000_000_000).div_ceil(rate as u128)) as u64,
        }
    }

    /// Bytes queued ahead of a frame arriving at `now_ns` (including the rest of the frame
    /// on the wire).
    pub fn backlog_bytes(&self, now_ns: u64) -> u64 {
        match self.rate_bps {
            None => 0,
            Some(rate) => {
                let waiting_ns = self.link_free_at_ns.saturating_sub(now_ns);
                (waiting_ns as u128 * rate as u128 / 8 / 1_000_000_000) as u64
            }
        }
    }

    /// Admits a frame of `len` bytes arriving at `now_ns`: the time it has left the link, or
    /// `None` when the queue is full (tail drop). `now_ns` must not go backwards.
    pub fn admit(&mut self, now_ns: u64, len: usize) -> Option<u64> {
        if self.rate_bps.is_none() {
            return Some(now_ns);
        }
        if self.backlog_bytes(now_ns) + len as u64 > self.queue_bytes {
            return None;
        }
        let start = self.link_free_at_ns.max(now_ns);
        self.link_free_at_ns = start + self.serialization_ns(len);
        Some(self.link_free_at_ns)
    }
}

/// Metadata of one frame in the ring.
#[derive(Debug, Clone, Copy, Default)]
struct FrameMeta {
    len: u32,
    deliver_at_ns: u64,
}

/// A FIFO of frames with their delivery times, in `capacity` fixed slots of [`SLOT_BYTES`].
///
/// Receiving writes straight into free slots ([`FrameRing::free_slots`]), then each received
/// frame is either kept ([`FrameRing::keep`], in arrival order) or dropped by skipping it.
/// Delivery times must not decrease: a FIFO link with a constant delay never reorders.
#[derive(Debug)]
pub struct FrameRing {
    data: Vec<u8>,
    meta: Vec<FrameMeta>,
    /// index of the oldest frame
    head: usize,
    /// frames held
    len: usize,
    /// first slot of the buffer the last `free_slots` handed out
    batch_base: usize,
}

impl FrameRing {
    /// A ring of `capacity` slots (at least 1).
    pub fn new(capacity: usize) -> Self {
        assert!(capacity > 0, "a frame ring needs at least one slot");
        Self {
            data: vec![0; capacity * SLOT_BYTES],
            meta: vec![FrameMeta::default(); capacity],
            head: 0,
            len: 0,
            batch_base: 0,
        }
    }

    /// Slots in the ring.
    pub fn capacity(&self) -> usize {
        self.meta.len()
    }

    /// Frames held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no frame is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn tail(&self) -> usize {
        (self.head + self.len) % self.capacity()
    }

    /// The free slots after the newest frame, contiguous in memory (so up to the end of the
    /// buffer, at most `max`): receive up to `n` frames into slot `i` at
    /// `[i × SLOT_BYTES, (i + 1) × SLOT_BYTES)` of the returned buffer, then call
    /// [`FrameRing::keep`] for the ones to forward.
    pub fn free_slots(&mut self, max: usize) -> (&mut [u8], usize) {
        let tail = self.tail();
        let free = self.capacity() - self.len;
        let n = free.min(self.capacity() - tail).min(max);
        self.batch_base = tail;
        (&mut self.data[tail * SLOT_BYTES..(tail + n) * SLOT_BYTES], n)
    }

    /// Keeps the frame of `len` bytes received into slot `slot` of the last
    /// [`FrameRing::free_slots`] buffer. Call in increasing `slot` order; slots skipped are
    /// dropped and their space reused.
    pub fn keep(&mut self, slot: usize, len: usize, deliver_at_ns: u64) {
        let tail = self.tail();
        let from = self.batch_base + slot;
        assert!(from >= tail && from < self.capacity() && self.len < self.capacity(), "slot {slot} was not handed out");
        assert!(len <= SLOT_BYTES, "frame of {len} bytes exceeds a slot");
        if from != tail {
            // An earlier frame of the batch was dropped: close the gap (rare, one frame copy).
            self.data.copy_within(from * SLOT_BYTES..from * SLOT_BYTES + len, tail * SLOT_BYTES);
        }
        if let Some(newest) = self.newest_deliver_at_ns() {
            debug_assert!(deliver_at_ns >= newest, "frame ring delivery times must not decrease");
        }
        self.meta[tail] = FrameMeta { len: len as u32, deliver_at_ns };
        self.len += 1;
    }

    fn newest_deliver_at_ns(&self) -> Option<u64> {
        (self.len > 0).then(|| self.meta[(self.head + self.len - 1) % self.capacity()].deliver_at_ns)
    }

    /// Delivery time of the oldest frame.
    pub fn next_deliver_at_ns(&self) -> Option<u64> {
        (self.len > 0).then(|| self.meta[self.head].deliver_at_ns)
    }

    /// The oldest frames due by `until_ns`, contiguous in memory, at most `max`: calls
    /// `each(i, frame)` for each and returns how many there are. Remove them with
    /// [`FrameRing::pop`] once sent.
    pub fn due(&self, until_ns: u64, max: usize, mut each: impl FnMut(usize, &[u8])) -> usize {
        let run = self.len.min(self.capacity() - self.head).min(max);
        let mut n = 0;
        while n < run {
            let slot = self.head + n;
            let meta = self.meta[slot];
            if meta.deliver_at_ns > until_ns {
                break;
            }
            each(n, &self.data[slot * SLOT_BYTES..slot * SLOT_BYTES + meta.len as usize]);
            n += 1;
        }
        n
    }

    /// Removes the `n` oldest frames.
    pub fn pop(&mut self, n: usize) {
        assert!(n <= self.len, "popping {n} of {} frames", self.len);
        self.head = (self.head + n) % self.capacity();
        self.len -= n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_sampler_is_reproducible_from_its_seed() {
        let draws = |seed, stream| {
            let mut s = LossSampler::new(seed, stream, 0.1);
            (0..10_000).map(|_| s.lose()).collect::<Vec<_>>()
        };
        assert_eq!(draws(7, 0), draws(7, 0));
        assert_ne!(draws(7, 0), draws(7, 1), "the two directions must lose different packets");
        assert_ne!(draws(7, 0), draws(8, 0));
    }

    #[test]
    fn loss_sampler_rate_matches_probability() {
        let mut s = LossSampler::new(1, 0, 0.001);
        let lost = (0..2_000_000).filter(|_| s.lose()).count();
        // 2000 expected; ±5 standard deviations (√2000 ≈ 45) cannot fail by chance.
        assert!((1775..=2225).contains(&lost), "lost {lost} of 2,000,000 at p = 0.001");
        let mut never = LossSampler::new(1, 0, 0.0);
        assert!((0..100_000).all(|_| !never.lose()));
        let mut always = LossSampler::new(1, 0, 1.0);
        assert!((0..100_000).all(|_| always.lose()));
    }

    #[test]
    fn serializer_spaces_frames_at_the_link_rate() {
        let mut link = Serializer::new(Some(1_000_000_000), 1 << 20);
        // 1514 bytes at 1 Gbit/s: 12,112 ns on the wire.
        assert_eq!(link.serialization_ns(1514), 12_112);
        let first = link.admit(1_000, 1514).unwrap();
        let second = link.admit(1_000, 1514).unwrap();
        assert_eq!(first, 13_112);
        assert_eq!(second, 25_224, "a frame arriving while the link is busy waits for it");
        // After the link went idle, a frame leaves one serialization after it arrives.
        assert_eq!(link.admit(1_000_000, 1514), Some(1_012_112));
    }

    #[test]
    fn serializer_throughput_over_a_second_is_the_rate() {
        let mut link = Serializer::new(Some(100_000_000), 1 << 20);
        let mut now = 0;
        let mut last = 0;
        let mut bytes = 0u64;
        // Offer far more than the link carries, in the same instant, in bursts of 64.
        while last < 1_000_000_000 {
            for _ in 0..64 {
                if let Some(done) = link.admit(now, 1500) {
                    last = done;
                    bytes += 1500;
                }
            }
            now += 100_000;
        }
        let rate = bytes as f64 * 8.0 / (last as f64 / 1e9);
        assert!((rate - 1e8).abs() < 1e8 * 0.001, "carried {rate} bit/s on a 100 Mbit/s link");
    }

    #[test]
    fn serializer_drops_at_the_tail_when_the_queue_is_full() {
        // 10 frames of queue at 1 Mbit/s: nothing drains during the burst.
        let mut link = Serializer::new(Some(1_000_000), 15_000);
        let admitted = (0..20).filter(|_| link.admit(0, 1500).is_some()).count();
        assert_eq!(admitted, 10);
        assert_eq!(link.backlog_bytes(0), 15_000);
        // Once one frame has drained (12 ms at 1 Mbit/s), exactly one more fits.
        assert!(link.admit(12_000_000, 1500).is_some());
        assert!(link.admit(12_000_000, 1500).is_none());
    }

    #[test]
    fn unlimited_serializer_passes_frames_at_once() {
        let mut link = Serializer::new(None, 0);
        assert_eq!(link.admit(5, 1514), Some(5));
        assert_eq!(link.backlog_bytes(5), 0);
    }

    fn push(ring: &mut FrameRing, frames: &[(&[u8], bool, u64)]) {
        let (buf, n) = ring.free_slots(frames.len());
        assert_eq!(n, frames.len());
        for (i, (bytes, _, _)) in frames.iter().enumerate() {
            buf[i * SLOT_BYTES..i * SLOT_BYTES + bytes.len()].copy_from_slice(bytes);
        }
        for (i, (bytes, keep, at)) in frames.iter().enumerate() {
            if *keep {
                ring.keep(i, bytes.len(), *at);
            }
        }
    }

    fn drain(ring: &mut FrameRing, until: u64) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            let n = ring.due(until, 64, |_, f| out.push(f.to_vec()));
            if n == 0 {
                return out;
            }
            ring.pop(n);
        }
    }

    #[test]
    fn frame_ring_delivers_in_order_when_due() {
        let mut ring = FrameRing::new(8);
        push(&mut ring, &[(b"one", true, 10), (b"two", true, 20), (b"three", true, 30)]);
        assert_eq!(ring.next_deliver_at_ns(), Some(10));
        assert!(drain(&mut ring, 9).is_empty(), "nothing is due before its time");
        assert_eq!(drain(&mut ring, 20), vec![b"one".to_vec(), b"two".to_vec()]);
        assert_eq!(drain(&mut ring, 100), vec![b"three".to_vec()]);
        assert!(ring.is_empty());
    }

    #[test]
    fn frame_ring_closes_gaps_left_by_dropped_frames() {
        let mut ring = FrameRing::new(8);
        let (buf, n) = ring.free_slots(4);
        assert_eq!(n, 4);
        for (i, b) in [b"aa", b"bb", b"cc", b"dd"].iter().enumerate() {
            buf[i * SLOT_BYTES..i * SLOT_BYTES + 2].copy_from_slice(*b);
        }
        // "aa" and "cc" are lost: "bb" and "dd" move down.
        ring.keep(1, 2, 1);
        ring.keep(3, 2, 1);
        assert_eq!(ring.len(), 2);
        assert_eq!(drain(&mut ring, 1), vec![b"bb".to_vec(), b"dd".to_vec()]);
    }

    #[test]
    fn frame_ring_wraps_and_reports_when_full() {
        let mut ring = FrameRing::new(4);
        push(&mut ring, &[(b"1", true, 1), (b"2", true, 2), (b"3", true, 3)]);
        assert_eq!(drain(&mut ring, 2).len(), 2);
        // Head at slot 2, one frame held: the free run ends at the buffer's end (slot 3).
        let (_, n) = ring.free_slots(64);
        assert_eq!(n, 1);
        push(&mut ring, &[(b"4", true, 4)]);
        // Now the free run wraps to the start: slots 0 and 1.
        push(&mut ring, &[(b"5", true, 5), (b"6", true, 6)]);
        assert_eq!(ring.len(), 4);
        assert_eq!(ring.free_slots(64).1, 0, "a full ring hands out no slot");
        let got = drain(&mut ring, 10);
        assert_eq!(got, vec![b"3".to_vec(), b"4".to_vec(), b"5".to_vec(), b"6".to_vec()]);
    }
}
