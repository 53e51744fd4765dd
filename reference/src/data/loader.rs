//! Batches of packed sequences in an order fixed by the seed. Epoch `e` visits every
//! training sequence once, in the permutation drawn from the RNG stream `e` of the seed:
//! all randomness is a function of `(seed, epoch)`, so the position `(epoch, cursor)` is
//! the loader's whole state and a checkpoint that stores it resumes the same batches.

use crate::error::{Error, Result};
use ndarray::Array2;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Where the loader stands: the RNG state of the data order, as a checkpoint stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct DataPosition {
    pub seed: u64,
    pub epoch: u64,
    /// Sequences of this epoch already handed out.
    pub cursor: usize,
    /// Tokens handed out since the start of the run (drives the batch-size warm-up).
    pub tokens_seen: u64,
}

/// Training sequences `[n, seq_len]` and the order they are read in.
#[derive(Debug, Clone)]
pub struct Loader {
    sequences: Vec<u32>,
    seq_len: usize,
    order: Vec<u32>,
    pos: DataPosition,
    max_id: u32,
}

fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<u32> {
    let mut order: Vec<u32> = (0..n as u32).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(epoch);
    order.shuffle(&mut rng);
    order
}

impl Loader {
    /// A loader over `sequences` (flat, a multiple of `seq_len`) at `pos` (a fresh run:
    /// `DataPosition { seed, ..Default::default() }`).
    pub fn new(sequences: Vec<u32>, seq_len: usize, pos: DataPosition) -> Result<Self> {
        let n = sequences.len() / seq_len.max(1);
        if n == 0 || !sequences.len().is_multiple_of(seq_len) {
            return Err(Error::Input(format!("{} tokens do not make sequences of {seq_len}", sequences.len())));
        }
        if pos.cursor > n {
            return Err(Error::Input(format!("data position {} is past the {n} sequences of an epoch", pos.cursor)));
        }
        let max_id = sequences.iter().copied().max().unwrap_or(0);
        Ok(Loader { order: epoch_order(n, pos.seed, pos.epoch), sequences, seq_len, pos, max_id })
    }

    /// The same sequences at another position (resuming a run).
    pub fn at(self, pos: DataPosition) -> Result<Self> {
        Loader::new(self.sequences, self.seq_len, pos)
    }

    /// One more than the largest token id: the smallest vocabulary that can read the data.
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// The packed training sequences, flat (what the run trains on, in file order).
    pub fn sequences(&self) -> &[u32] {
        &self.sequences
    }

    pub fn vocab_needed(&self) -> usize {
        self.max_id as usize + 1
    }

    pub fn position(&self) -> DataPosition {
        self.pos
    }

    pub fn n_sequences(&self) -> usize {
        self.order.len()
    }

    /// The next `batch` sequences as token ids `[batch, seq_len]`, moving to the next epoch
    /// (and its permutation) when this one runs out.
    pub fn next_batch(&mut self, batch: usize) -> Array2<i64> {
        let mut out = Array2::<i64>::zeros((batch, self.seq_len));
        for mut row in out.outer_iter_mut() {
            if self.pos.cursor == self.order.len() {
                self.pos.epoch += 1;
                self.pos.cursor = 0;
                self.order = epoch_order(self.order.len(), self.pos.seed, self.pos.epoch);
            }
            let start = self.order[self.pos.cursor] as usize * self.seq_len;
            let seq = &self.sequences[start..start + self.seq_len];
            row.iter_mut().zip(seq).for_each(|(dst, &id)| *dst = i64::from(id));
            self.pos.cursor += 1;
        }
        self.pos.tokens_seen += (batch * self.seq_len) as u64;
        out
    }
}

/// Validation batches in the stored order (no shuffling): batch `i` is sequences
/// `i·batch..(i+1)·batch`; the last batch may be shorter.
pub fn validation_batches(sequences: &[u32], seq_len: usize, batch: usize) -> Vec<Array2<i64>> {
    sequences
        .chunks(seq_len * batch.max(1))
        .map(|c| Array2::from_shape_fn((c.len() / seq_len, seq_len), |(i, j)| i64::from(c[i * seq_len + j])))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbered(n: usize, seq_len: usize) -> Vec<u32> {
        (0..n * seq_len).map(|i| (i / seq_len) as u32).collect()
    }

    #[test]
    fn every_epoch_visits_every_sequence_once() {
        let mut l = Loader::new(numbered(10, 3), 3, DataPosition { seed: 5, ..Default::default() }).unwrap();
        let mut epoch0: Vec<i64> = (0..5).flat_map(|_| l.next_batch(2).column(0).to_vec()).collect();
        let mut epoch1: Vec<i64> = (0..5).flat_map(|_| l.next_batch(2).column(0).to_vec()).collect();
        assert_ne!(epoch0, epoch1, "each epoch has its own order");
        epoch0.sort();
        epoch1.sort();
        assert_eq!(epoch0, (0..10).collect::<Vec<i64>>());
        assert_eq!(epoch1, epoch0);
        assert_eq!(l.position().tokens_seen, 60);
    }

    #[test]
    fn resuming_from_a_position_gives_the_same_batches() {
        let data = numbered(7, 4);
        let mut straight = Loader::new(data.clone(), 4, DataPosition { seed: 3, ..Default::default() }).unwrap();
        let first: Vec<_> = (0..3).map(|_| straight.next_batch(3)).collect();
        let saved = straight.position();
        let rest: Vec<_> = (0..4).map(|_| straight.next_batch(3)).collect();
        let mut resumed = Loader::new(data, 4, saved).unwrap();
        let again: Vec<_> = (0..4).map(|_| resumed.next_batch(3)).collect();
        assert_eq!(rest, again);
        assert_ne!(first[0], rest[0]);
    }

    #[test]
    fn validation_keeps_the_stored_order() {
        let v = validation_batches(&numbered(5, 2), 2, 2);
        assert_eq!(v.len(), 3);
        assert_eq!(v[2].shape(), [1, 2]);
        assert_eq!(v[1].column(0).to_vec(), [2, 3]);
    }
}
