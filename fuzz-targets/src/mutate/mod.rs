//! Mutations: byte-level (bit flips, inserts, deletes, splices, interesting integers),
//! JSON-aware (values replaced by interesting numbers and types, keys added and removed)
//! and safetensors-aware (the header's shapes, dtypes, offsets and names changed, the data
//! repacked to fit or not). The stable fuzzer draws them from a random generator; the
//! `checkpoint_header` target draws them from its input bytes ([`header_program`]).

/// Where a mutation's choices come from.
pub trait Source {
    fn u64(&mut self) -> u64;
    /// Uniform in `0..n` (0 when `n` is 0).
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.u64() % n as u64) as usize
        }
    }
    /// True once in `one_in` (never for a [`ByteSource`] that has run out).
    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == one_in.saturating_sub(1)
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// SplitMix64: the stable fuzzer's generator.
pub struct Rng(pub u64);

impl Source for Rng {
    fn u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Choices read from a fuzz input, one byte each (0 once it runs out).
pub struct ByteSource<'a>(pub &'a [u8]);

impl Source for ByteSource<'_> {
    fn u64(&mut self) -> u64 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                u64::from(*b)
            }
            None => 0,
        }
    }
    fn below(&mut self, n: usize) -> usize {
        if n <= 256 {
            return if n == 0 { 0 } else { self.u64() as usize % n };
        }
        let wide = (self.u64() << 24) | (self.u64() << 16) | (self.u64() << 8) | self.u64();
        (wide % n as u64) as usize
    }
}

mod bytes;
mod dictionary;
mod json;
mod safetensors;

pub use bytes::mutate_bytes;
pub use dictionary::*;
pub use json::{json_text, mutate_json};
pub use safetensors::{
    build_safetensors, header_program, mutate_header, mutate_safetensors, offsets, split_safetensors,
};
