//! MD5 over many independent streams at once (the multi-buffer technique).
//!
//! MD5 is serial within a stream: each 64-byte block needs the state the block before
//! left, and one core runs about 600 MB/s of one stream. But an S3 gateway hashes many
//! uploads at a time, and their blocks are independent of each other. With AVX-512, one
//! instruction advances the same MD5 step in sixteen streams (one 32-bit lane each), so a
//! pass of the 64 steps hashes sixteen blocks for about the cost a scalar pass pays for
//! one. [`update_many`] feeds a batch of streams through that kernel; a CPU with AVX2 but
//! not AVX-512 runs eight streams per pass; where neither is there (or only one stream has
//! work), each stream runs the scalar kernel. All three are tested against the RFC 1321
//! vectors and against the `md-5` crate.
//!
//! The state is plain data ([`Md5State`]): a batch can take any streams, whatever was
//! fed to them before, and a state can be moved between threads or jobs.

use std::fmt;

/// Streams one pass of the widest vector kernel advances together (32-bit lanes of a
/// 512-bit register).
pub const LANES: usize = 16;

/// A kernel this CPU can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kernel {
    Scalar,
    Avx2,
    Avx512,
}

impl Kernel {
    /// The widest one here (found once: every batch asks).
    fn best() -> Self {
        static BEST: std::sync::OnceLock<Kernel> = std::sync::OnceLock::new();
        *BEST.get_or_init(|| Self::available().pop().expect("the scalar kernel runs anywhere"))
    }

    /// Every kernel this CPU can run, narrowest first.
    fn available() -> Vec<Self> {
        let mut kernels = vec![Self::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                kernels.push(Self::Avx2);
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                kernels.push(Self::Avx512);
            }
        }
        kernels
    }

    /// Streams per pass.
    fn lanes(self) -> usize {
        match self {
            Self::Scalar => 1,
            Self::Avx2 => 8,
            Self::Avx512 => LANES,
        }
    }
}

const BLOCK: usize = 64;
const INIT: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];

/// The running MD5 of one stream.
#[derive(Clone)]
pub struct Md5State {
    h: [u32; 4],
    /// Bytes fed so far.
    len: u64,
    /// The start of a block waiting for the rest of its bytes.
    pending: [u8; BLOCK],
    pending_len: usize,
}

impl Default for Md5State {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Md5State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Md5State").field("len", &self.len).finish_non_exhaustive()
    }
}

impl Md5State {
    /// The state before any input.
    pub fn new() -> Self {
        Self { h: INIT, len: 0, pending: [0; BLOCK], pending_len: 0 }
    }

    /// Bytes fed so far.
    pub fn bytes(&self) -> u64 {
        self.len
    }

    /// Feeds the next bytes of this stream alone (the scalar kernel).
    pub fn update(&mut self, data: &[u8]) {
        let whole = self.absorb(data);
        compress_scalar(&mut self.h, whole);
    }

    /// The digest of everything fed.
    pub fn finalize(mut self) -> [u8; 16] {
        let bits = self.len.wrapping_mul(8);
        let mut tail = [0u8; 2 * BLOCK];
        let n = self.pending_len;
        tail[..n].copy_from_slice(&self.pending[..n]);
        tail[n] = 0x80;
        let end = if n < BLOCK - 8 { BLOCK } else { 2 * BLOCK };
        tail[end - 8..end].copy_from_slice(&bits.to_le_bytes());
        compress_scalar(&mut self.h, &tail[..end]);
        let mut out = [0u8; 16];
        for (word, bytes) in self.h.iter().zip(out.chunks_exact_mut(4)) {
            bytes.copy_from_slice(&word.to_le_bytes());
        }
        out
    }

    /// Counts `data`, completes and hashes a pending block with its head, keeps its
    /// ragged tail pending, and returns the whole blocks in between for the caller to
    /// hash (with either kernel).
    fn absorb<'d>(&mut self, mut data: &'d [u8]) -> &'d [u8] {
        self.len = self.len.wrapping_add(data.len() as u64);
        if self.pending_len > 0 {
            let take = (BLOCK - self.pending_len).min(data.len());
            self.pending[self.pending_len..self.pending_len + take].copy_from_slice(&data[..take]);
            self.pending_len += take;
            data = &data[take..];
            if self.pending_len < BLOCK {
                return &[];
            }
            let block = self.pending;
            compress_scalar(&mut self.h, &block);
            self.pending_len = 0;
        }
        let whole = data.len() / BLOCK * BLOCK;
        let rest = &data[whole..];
        self.pending[..rest.len()].copy_from_slice(rest);
        self.pending_len = rest.len();
        &data[..whole]
    }
}

/// Feeds `inputs[i]` to `states[i]`, for every `i`, with the vector kernel where the CPU
/// has it. The result is the same as calling [`Md5State::update`] on each.
///
/// # Panics
/// If the two slices differ in length.
pub fn update_many(states: &mut [&mut Md5State], inputs: &[&[u8]]) {
    update_many_with(states, inputs, Kernel::best());
}

fn update_many_with(states: &mut [&mut Md5State], inputs: &[&[u8]], kernel: Kernel) {
    assert_eq!(states.len(), inputs.len(), "one input per state");
    let mut lanes: Vec<(&mut [u32; 4], &[u8])> = states
        .iter_mut()
        .zip(inputs)
        .map(|(state, data)| {
            let whole = state.absorb(data);
            (&mut state.h, whole)
        })
        .collect();
    compress_lanes(&mut lanes, kernel);
}

/// Which kernel runs batches here: "avx512", "avx2" or "scalar".
pub fn kernel_name() -> &'static str {
    match Kernel::best() {
        Kernel::Scalar => "scalar",
        Kernel::Avx2 => "avx2",
        Kernel::Avx512 => "avx512",
    }
}

/// Hashes each lane's whole blocks into its state: groups of as many streams as the
/// kernel takes, for as many blocks as the shortest of the group has, again until at
/// most one stream has blocks left, which the scalar kernel finishes.
fn compress_lanes(lanes: &mut [(&mut [u32; 4], &[u8])], kernel: Kernel) {
    loop {
        let busy: Vec<usize> = (0..lanes.len()).filter(|&i| !lanes[i].1.is_empty()).collect();
        if kernel == Kernel::Scalar || busy.len() < 2 {
            for &i in &busy {
                let (h, data) = &mut lanes[i];
                compress_scalar(h, data);
                *data = &[];
            }
            return;
        }
        for group in busy.chunks(kernel.lanes()) {
            if group.len() < 2 {
                continue; // the next round gives it company or the scalar kernel
            }
            let blocks = group.iter().map(|&i| lanes[i].1.len() / BLOCK).min().expect("a group is not empty");
            let mut states = [[0u32; 4]; LANES];
            let mut ptrs = [lanes[group[0]].1.as_ptr(); LANES];
            for (slot, &i) in group.iter().enumerate() {
                states[slot] = *lanes[i].0;
                ptrs[slot] = lanes[i].1.as_ptr();
            }
            // SAFETY: the kernel was detected (`Kernel::available`); every pointer is
            // valid for `blocks` × 64 bytes: the shortest lane of the group has that
            // many, and the unused slots repeat the first lane's pointer.
            #[cfg(target_arch = "x86_64")]
            unsafe {
                match kernel {
                    Kernel::Avx512 => x16::compress(&mut states, &ptrs, blocks),
                    Kernel::Avx2 => x8::compress(&mut states, &ptrs, blocks),
                    Kernel::Scalar => unreachable!("handled above"),
                }
            };
            for (slot, &i) in group.iter().enumerate() {
                *lanes[i].0 = states[slot];
                lanes[i].1 = &lanes[i].1[blocks * BLOCK..];
            }
        }
    }
}

/// Per-step additive constants: floor(abs(sin(i + 1)) × 2^32).
const K: [u32; 64] = [
    0xd76a_a478,
    0xe8c7_b756,
    0x2420_70db,
    0xc1bd_ceee,
    0xf57c_0faf,
    0x4787_c62a,
    0xa830_4613,
    0xfd46_9501,
    0x6980_98d8,
    0x8b44_f7af,
    0xffff_5bb1,
    0x895c_d7be,
    0x6b90_1122,
    0xfd98_7193,
    0xa679_438e,
    0x49b4_0821,
    0xf61e_2562,
    0xc040_b340,
    0x265e_5a51,
    0xe9b6_c7aa,
    0xd62f_105d,
    0x0244_1453,
    0xd8a1_e681,
    0xe7d3_fbc8,
    0x21e1_cde6,
    0xc337_07d6,
    0xf4d5_0d87,
    0x455a_14ed,
    0xa9e3_e905,
    0xfcef_a3f8,
    0x676f_02d9,
    0x8d2a_4c8a,
    0xfffa_3942,
    0x8771_f681,
    0x6d9d_6122,
    0xfde5_380c,
    0xa4be_ea44,
    0x4bde_cfa9,
    0xf6bb_4b60,
    0xbebf_bc70,
    0x289b_7ec6,
    0xeaa1_27fa,
    0xd4ef_3085,
    0x0488_1d05,
    0xd9d4_d039,
    0xe6db_99e5,
    0x1fa2_7cf8,
    0xc4ac_5665,
    0xf429_2244,
    0x432a_ff97,
    0xab94_23a7,
    0xfc93_a039,
    0x655b_59c3,
    0x8f0c_cc92,
    0xffef_f47d,
    0x8584_5dd1,
    0x6fa8_7e4f,
    0xfe2c_e6e0,
    0xa301_4314,
    0x4e08_11a1,
    0xf753_7e82,
    0xbd3a_f235,
    0x2ad7_d2bb,
    0xeb86_d391,
];
/// Left rotations, four per round.
const S: [[u32; 4]; 4] = [[7, 12, 17, 22], [5, 9, 14, 20], [4, 11, 16, 23], [6, 10, 15, 21]];

/// The left rotation of step `i`.
const fn rotation(i: usize) -> u32 {
    S[i / 16][i % 4]
}

/// The message word step `i` adds.
const fn word(i: usize) -> usize {
    match i / 16 {
        0 => i,
        1 => (5 * i + 1) % 16,
        2 => (3 * i + 5) % 16,
        _ => (7 * i) % 16,
    }
}

/// The reference kernel: `data` is whole blocks.
fn compress_scalar(h: &mut [u32; 4], data: &[u8]) {
    debug_assert_eq!(data.len() % BLOCK, 0);
    for block in data.chunks_exact(BLOCK) {
        let mut m = [0u32; 16];
        for (w, bytes) in m.iter_mut().zip(block.chunks_exact(4)) {
            *w = u32::from_le_bytes(bytes.try_into().expect("four bytes"));
        }
        let [mut a, mut b, mut c, mut d] = *h;
        // Unrolled by a macro so that every constant, shift and word index is a literal.
        macro_rules! step {
            ($f:expr, $i:expr) => {{
                let f: u32 = $f(b, c, d);
                let rotated = a.wrapping_add(f).wrapping_add(K[$i]).wrapping_add(m[word($i)]).rotate_left(rotation($i));
                (a, b, c, d) = (d, b.wrapping_add(rotated), b, c);
            }};
        }
        macro_rules! round {
            ($f:expr, $first:expr) => {
                step!($f, $first);
                step!($f, $first + 1);
                step!($f, $first + 2);
                step!($f, $first + 3);
                step!($f, $first + 4);
                step!($f, $first + 5);
                step!($f, $first + 6);
                step!($f, $first + 7);
                step!($f, $first + 8);
                step!($f, $first + 9);
                step!($f, $first + 10);
                step!($f, $first + 11);
                step!($f, $first + 12);
                step!($f, $first + 13);
                step!($f, $first + 14);
                step!($f, $first + 15);
            };
        }
        round!(|b: u32, c: u32, d: u32| d ^ (b & (c ^ d)), 0);
        round!(|b: u32, c: u32, d: u32| c ^ (d & (b ^ c)), 16);
        round!(|b: u32, c: u32, d: u32| b ^ c ^ d, 32);
        round!(|b: u32, c: u32, d: u32| c ^ (b | !d), 48);
        h[0] = h[0].wrapping_add(a);
        h[1] = h[1].wrapping_add(b);
        h[2] = h[2].wrapping_add(c);
        h[3] = h[3].wrapping_add(d);
    }
}

#[cfg(target_arch = "x86_64")]
mod x16 {
    use super::{BLOCK, K, LANES, rotation, word};
    use std::arch::x86_64::*;

    /// Truth tables for `vpternlogd` with operands (b, c, d): each round's function is
    /// one instruction.
    const F: i32 = 0xCA; // b ? c : d
    const G: i32 = 0xE4; // d ? b : c
    const H: i32 = 0x96; // b ^ c ^ d
    const I: i32 = 0x39; // c ^ (b | !d)

    /// Hashes `blocks` blocks of each of the sixteen streams at `ptrs` into `states`.
    ///
    /// # Safety
    /// The CPU has AVX-512F, and each pointer is valid for reads of `blocks` × 64 bytes.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn compress(states: &mut [[u32; 4]; LANES], ptrs: &[*const u8; LANES], blocks: usize) {
        let column = |k: usize| {
            let lane: [u32; LANES] = std::array::from_fn(|l| states[l][k]);
            // SAFETY: 64 bytes read from a 64-byte array.
            unsafe { _mm512_loadu_si512(lane.as_ptr().cast()) }
        };
        let (mut a, mut b, mut c, mut d) = (column(0), column(1), column(2), column(3));
        let addresses: [u64; LANES] = std::array::from_fn(|l| ptrs[l] as u64);
        // SAFETY: 64 bytes read from each half of a 128-byte array.
        let (mut lo, mut hi) = unsafe {
            (_mm512_loadu_si512(addresses.as_ptr().cast()), _mm512_loadu_si512(addresses[8..].as_ptr().cast()))
        };
        let step = _mm512_set1_epi64(BLOCK as i64);
        for _ in 0..blocks {
            // Message word w of all sixteen blocks: two gathers of eight lanes each.
            let m: [__m512i; 16] = std::array::from_fn(|w| {
                let offset = _mm512_set1_epi64(4 * w as i64);
                // SAFETY: the address is within the block the caller vouched for.
                unsafe {
                    let low = _mm512_i64gather_epi32::<1>(_mm512_add_epi64(lo, offset), std::ptr::null());
                    let high = _mm512_i64gather_epi32::<1>(_mm512_add_epi64(hi, offset), std::ptr::null());
                    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(low), high)
                }
            });
            let (aa, bb, cc, dd) = (a, b, c, d);
            macro_rules! step {
                ($func:expr, $i:expr) => {{
                    let f = _mm512_ternarylogic_epi32::<{ $func }>(b, c, d);
                    // a + K + m does not wait for the step before (f does): adding f
                    // last keeps the chain between steps to four instructions.
                    let sum = _mm512_add_epi32(
                        _mm512_add_epi32(a, _mm512_add_epi32(_mm512_set1_epi32(K[$i] as i32), m[word($i)])),
                        f,
                    );
                    let rotated = _mm512_rolv_epi32(sum, _mm512_set1_epi32(rotation($i) as i32));
                    (a, b, c, d) = (d, _mm512_add_epi32(b, rotated), b, c);
                }};
            }
            for i in 0..16 {
                step!(F, i);
            }
            for i in 16..32 {
                step!(G, i);
            }
            for i in 32..48 {
                step!(H, i);
            }
            for i in 48..64 {
                step!(I, i);
            }
            a = _mm512_add_epi32(a, aa);
            b = _mm512_add_epi32(b, bb);
            c = _mm512_add_epi32(c, cc);
            d = _mm512_add_epi32(d, dd);
            lo = _mm512_add_epi64(lo, step);
            hi = _mm512_add_epi64(hi, step);
        }
        for (k, v) in [a, b, c, d].into_iter().enumerate() {
            let mut lane = [0u32; LANES];
            // SAFETY: 64 bytes written to a 64-byte array.
            unsafe { _mm512_storeu_si512(lane.as_mut_ptr().cast(), v) };
            for (l, state) in states.iter_mut().enumerate() {
                state[k] = lane[l];
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x8 {
    use super::{BLOCK, K, LANES, rotation, word};
    use std::arch::x86_64::*;

    /// Hashes `blocks` blocks of each of the eight streams at `ptrs[..8]` into
    /// `states[..8]` (the other slots are left alone).
    ///
    /// # Safety
    /// The CPU has AVX2, and each of the first eight pointers is valid for reads of
    /// `blocks` × 64 bytes.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn compress(states: &mut [[u32; 4]; LANES], ptrs: &[*const u8; LANES], blocks: usize) {
        let column = |k: usize| {
            let lane: [u32; 8] = std::array::from_fn(|l| states[l][k]);
            // SAFETY: 32 bytes read from a 32-byte array.
            unsafe { _mm256_loadu_si256(lane.as_ptr().cast()) }
        };
        let (mut a, mut b, mut c, mut d) = (column(0), column(1), column(2), column(3));
        let addresses: [u64; 8] = std::array::from_fn(|l| ptrs[l] as u64);
        // SAFETY: 32 bytes read from each half of a 64-byte array.
        let (mut lo, mut hi) = unsafe {
            (_mm256_loadu_si256(addresses.as_ptr().cast()), _mm256_loadu_si256(addresses[4..].as_ptr().cast()))
        };
        let step = _mm256_set1_epi64x(BLOCK as i64);
        let ones = _mm256_set1_epi32(-1);
        for _ in 0..blocks {
            // Message word w of all eight blocks: two gathers of four lanes each.
            let m: [__m256i; 16] = std::array::from_fn(|w| {
                let offset = _mm256_set1_epi64x(4 * w as i64);
                // SAFETY: the address is within the block the caller vouched for.
                unsafe {
                    let low = _mm256_i64gather_epi32::<1>(std::ptr::null(), _mm256_add_epi64(lo, offset));
                    let high = _mm256_i64gather_epi32::<1>(std::ptr::null(), _mm256_add_epi64(hi, offset));
                    _mm256_set_m128i(high, low)
                }
            });
            let (aa, bb, cc, dd) = (a, b, c, d);
            macro_rules! step {
                ($f:expr, $i:expr) => {{
                    let f = $f;
                    let sum = _mm256_add_epi32(
                        _mm256_add_epi32(a, _mm256_add_epi32(_mm256_set1_epi32(K[$i] as i32), m[word($i)])),
                        f,
                    );
                    let r = rotation($i) as i32;
                    let rotated = _mm256_or_si256(
                        _mm256_sllv_epi32(sum, _mm256_set1_epi32(r)),
                        _mm256_srlv_epi32(sum, _mm256_set1_epi32(32 - r)),
                    );
                    (a, b, c, d) = (d, _mm256_add_epi32(b, rotated), b, c);
                }};
            }
            for i in 0..16 {
                step!(_mm256_xor_si256(d, _mm256_and_si256(b, _mm256_xor_si256(c, d))), i);
            }
            for i in 16..32 {
                step!(_mm256_xor_si256(c, _mm256_and_si256(d, _mm256_xor_si256(b, c))), i);
            }
            for i in 32..48 {
                step!(_mm256_xor_si256(_mm256_xor_si256(b, c), d), i);
            }
            for i in 48..64 {
                step!(_mm256_xor_si256(c, _mm256_or_si256(b, _mm256_xor_si256(d, ones))), i);
            }
            a = _mm256_add_epi32(a, aa);
            b = _mm256_add_epi32(b, bb);
            c = _mm256_add_epi32(c, cc);
            d = _mm256_add_epi32(d, dd);
            lo = _mm256_add_epi64(lo, step);
            hi = _mm256_add_epi64(hi, step);
        }
        for (k, v) in [a, b, c, d].into_iter().enumerate() {
            let mut lane = [0u32; 8];
            // SAFETY: 32 bytes written to a 32-byte array.
            unsafe { _mm256_storeu_si256(lane.as_mut_ptr().cast(), v) };
            for (l, state) in states.iter_mut().take(8).enumerate() {
                state[k] = lane[l];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use md5::Digest as _;

    fn hex(d: [u8; 16]) -> String {
        hex::encode(d)
    }

    #[test]
    fn rfc_1321_vectors() {
        let vectors: [(&str, &str); 7] = [
            ("", "d41d8cd98f00b204e9800998ecf8427e"),
            ("a", "0cc175b9c0f1b6a831c399e269772661"),
            ("abc", "900150983cd24fb0d6963f7d28e17f72"),
            ("message digest", "f96b697d7cb7938d525a2f31aaf161d0"),
            ("abcdefghijklmnopqrstuvwxyz", "c3fcd3d76192e4007dfb496cca67e13b"),
            ("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", "d174ab98d277d9f5a5611c2c9f419d9f"),
            (
                "12345678901234567890123456789012345678901234567890123456789012345678901234567890",
                "57edf4a22be3c955ac49da2e2107b67a",
            ),
        ];
        for (input, want) in vectors {
            let mut s = Md5State::new();
            s.update(input.as_bytes());
            assert_eq!(hex(s.finalize()), want, "scalar, {input:?}");
        }
        // The same vectors as sixteen lanes of one batch, twice over so every lane has
        // a whole block for the vector kernel, fed in two uneven pieces.
        for kernel in Kernel::available() {
            let inputs: Vec<Vec<u8>> =
                (0..LANES).map(|i| vectors[i % vectors.len()].0.repeat(3).into_bytes()).collect();
            let mut states: Vec<Md5State> = (0..LANES).map(|_| Md5State::new()).collect();
            for part in [0..1usize, 1..usize::MAX] {
                let slices: Vec<&[u8]> =
                    inputs.iter().map(|v| &v[part.start.min(v.len())..part.end.min(v.len())]).collect();
                let mut lanes: Vec<(&mut [u32; 4], &[u8])> = Vec::new();
                let mut refs: Vec<&mut Md5State> = states.iter_mut().collect();
                for (s, d) in refs.iter_mut().zip(&slices) {
                    let whole = s.absorb(d);
                    lanes.push((&mut s.h, whole));
                }
                compress_lanes(&mut lanes, kernel);
            }
            for (input, state) in inputs.iter().zip(states) {
                assert_eq!(state.finalize(), <[u8; 16]>::from(md5::Md5::digest(input)), "{kernel:?}");
            }
        }
    }

    /// Streams of every length around the block and lane boundaries, fed in random
    /// pieces through batches of random sizes, against the `md-5` crate.
    #[test]
    fn batches_agree_with_the_reference() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for round in 0..60 {
            let kernels = Kernel::available();
            let kernel = kernels[round % kernels.len()];
            let streams = rng.gen_range(1..=2 * LANES + 3);
            let inputs: Vec<Vec<u8>> = (0..streams)
                .map(|_| {
                    let len = match rng.gen_range(0..4) {
                        0 => rng.gen_range(0..130),
                        1 => rng.gen_range(0..4096),
                        _ => rng.gen_range(0..70_000),
                    };
                    (0..len).map(|_| rng.r#gen::<u8>()).collect()
                })
                .collect();
            let mut states: Vec<Md5State> = (0..streams).map(|_| Md5State::new()).collect();
            let mut fed = vec![0usize; streams];
            while fed.iter().zip(&inputs).any(|(f, i)| f < &i.len()) {
                let mut pieces: Vec<&[u8]> = Vec::new();
                for (f, input) in fed.iter_mut().zip(&inputs) {
                    let take = rng.gen_range(0..=(input.len() - *f).min(20_000));
                    pieces.push(&input[*f..*f + take]);
                    *f += take;
                }
                let mut refs: Vec<&mut Md5State> = states.iter_mut().collect();
                update_many_with(&mut refs, &pieces, kernel);
            }
            for (input, state) in inputs.iter().zip(states) {
                assert_eq!(state.bytes(), input.len() as u64);
                assert_eq!(
                    state.finalize(),
                    <[u8; 16]>::from(md5::Md5::digest(input)),
                    "round {round}, {kernel:?}, {} bytes",
                    input.len()
                );
            }
        }
    }
}
