//! DualPipe (DeepSeek-V3 §3.2.1, Figure 5) and DualPipeV, as deepseek-ai/DualPipe's
//! `DualPipe.step` and `DualPipeV.step` order their chunks.
//!
//! Each rank holds two stages and runs two *phases*, one per stage. DualPipe: micro-batches
//! of direction 0 enter at rank 0 and pass stages 0, …, P−1 on ranks 0, …, P−1; those of
//! direction 1 enter at rank P−1 and pass the same stages on ranks P−1, …, 0; so rank r
//! holds stages r and P−1−r. Phase 0 is the direction whose micro-batches arrive first
//! (direction 0 on the first half of the ranks, 1 on the second): the schedule is mirrored
//! about the middle. DualPipeV: one
//! direction through 2P stages in a V, rank r holding stage r (phase 0) and 2P−1−r
//! (phase 1).
//!
//! With n = P/2 half-ranks, h = min(r, P−1−r) and m = M/2 micro-batches per phase for
//! DualPipe (n = P, h = r, m = M for DualPipeV), rank r runs the published steps:
//!
//! | step | repeated | ops |
//! |---|---|---|
//! | nF0 | 2(n−h−1) | F0 |
//! | nF0F1 | h+1 | F0, F1 |
//! | nB1W1F1 | n−h−1 | I1 (zero bubble: inputs only), W, F1 |
//! | nF0B1F1B0 (main) | m−2n+h+1 | F0&B1, F1&B0 (on the middle ranks the first F0 and B1 run apart) |
//! | nB1F1B0 | n−h−1 | B1, F1&B0 |
//! | nB1B0 | h+1 | B1, B0, the second half of them inputs only |
//! | nWB0 | n−h−1 | W, I0 |
//! | nW | h+1 | W |
//!
//! F0 is a forward of phase 0's next micro-batch, B1 a full backward of phase 1's, Fx&By
//! the two overlapped in one op, and W the oldest pending backward for weights (the code's
//! `WeightGradStore` is a queue). The main step needs m ≥ 2n, hence M ≥ 2P for both.

use super::{Chunk, Op, Schedule, ScheduleKind};
use crate::error::{Error, Result};
use std::collections::VecDeque;

/// DualPipe on `ranks` ranks (even) for `micro_batches` micro-batches (even, ≥ 2 × ranks).
pub fn dualpipe(ranks: usize, micro_batches: usize) -> Result<Schedule> {
    if !ranks.is_multiple_of(2) {
        return Err(Error::setting("--ranks", format!("DualPipe needs an even number of ranks, got {ranks}")));
    }
    if !micro_batches.is_multiple_of(2) || micro_batches < 2 * ranks {
        return Err(Error::setting(
            "--micro-batches",
            format!(
                "DualPipe needs an even number of micro-batches, at least 2 x --ranks = {}, got {micro_batches}",
                2 * ranks
            ),
        ));
    }
    let half = ranks / 2;
    let ops = (0..ranks)
        .map(|rank| {
            let second_half = rank >= half;
            // Phase 0 is the direction that reaches this rank first.
            let direction = |phase: usize| phase ^ usize::from(second_half);
            let stage = |d: usize| if d == 0 { rank } else { ranks - 1 - rank };
            let rank_steps = RankSteps {
                half_rank: rank.min(ranks - 1 - rank),
                half_ranks: half,
                per_phase: micro_batches / 2,
                middle: rank.min(ranks - 1 - rank) == half - 1,
                chunk_of: &|phase, micro_batch| {
                    let d = direction(phase);
                    Chunk { direction: d, micro_batch, stage: stage(d) }
                },
            };
            rank_steps.ops()
        })
        .collect();
    Ok(Schedule { kind: ScheduleKind::DualPipe, ranks, micro_batches, directions: 2, stages: ranks, ops })
}

/// DualPipeV on `ranks` ranks (2 × ranks stages) for `micro_batches` ≥ 2 × ranks micro-batches.
pub fn dualpipe_v(ranks: usize, micro_batches: usize) -> Result<Schedule> {
    if micro_batches < 2 * ranks {
        return Err(Error::setting(
            "--micro-batches",
            format!("DualPipeV needs at least 2 x --ranks = {} micro-batches, got {micro_batches}", 2 * ranks),
        ));
    }
    let ops = (0..ranks)
        .map(|rank| {
            let rank_steps = RankSteps {
                half_rank: rank,
                half_ranks: ranks,
                per_phase: micro_batches,
                middle: rank == ranks - 1,
                chunk_of: &|phase, micro_batch| Chunk {
                    direction: 0,
                    micro_batch,
                    stage: if phase == 0 { rank } else { 2 * ranks - 1 - rank },
                },
            };
            rank_steps.ops()
        })
        .collect();
    Ok(Schedule { kind: ScheduleKind::DualPipeV, ranks, micro_batches, directions: 1, stages: 2 * ranks, ops })
}

/// One rank's place in the schedule: the numbers the steps are counted from.
struct RankSteps<'a> {
    /// h: the distance from the nearer end (DualPipe) or the rank itself (DualPipeV).
    half_rank: usize,
    /// n: P/2 for DualPipe, P for DualPipeV.
    half_ranks: usize,
    /// m: the micro-batches each phase runs.
    per_phase: usize,
    /// The rank where the two phases meet (h = n − 1): its first main-step F0 and B1 are not
    /// overlapped ("to further reduce bubble size", says the code).
    middle: bool,
    /// The chunk of `phase`'s `micro_batch`-th micro-batch on this rank.
    chunk_of: &'a dyn Fn(usize, usize) -> Chunk,
}

/// The ops of one rank as they are appended, with the counters the reference code keeps:
/// the next forward and backward of each phase, and the queue of pending weight backwards.
struct Ops<'a> {
    chunk_of: &'a dyn Fn(usize, usize) -> Chunk,
    next_forward: [usize; 2],
    next_backward: [usize; 2],
    pending_weights: VecDeque<Chunk>,
    ops: Vec<Op>,
}

impl Ops<'_> {
    fn forward_chunk(&mut self, phase: usize) -> Chunk {
        self.next_forward[phase] += 1;
        (self.chunk_of)(phase, self.next_forward[phase] - 1)
    }

    fn backward_chunk(&mut self, phase: usize) -> Chunk {
        self.next_backward[phase] += 1;
        (self.chunk_of)(phase, self.next_backward[phase] - 1)
    }

    fn forward(&mut self, phase: usize) {
        let chunk = self.forward_chunk(phase);
        self.ops.push(Op::Forward { chunk });
    }

    /// A backward of `phase`: full, or for inputs only with its W queued (`zero_bubble`).
    fn backward(&mut self, phase: usize, zero_bubble: bool) {
        let chunk = self.backward_chunk(phase);
        if zero_bubble {
            self.pending_weights.push_back(chunk);
            self.ops.push(Op::BackwardInput { chunk });
        } else {
            self.ops.push(Op::Backward { chunk });
        }
    }

    fn weight(&mut self) {
        let chunk = self.pending_weights.pop_front().expect("the steps queue a W before running it");
        self.ops.push(Op::BackwardWeight { chunk });
    }

    fn forward_backward(&mut self, forward_phase: usize, backward_phase: usize) {
        let forward = self.forward_chunk(forward_phase);
        let backward = self.backward_chunk(backward_phase);
        self.ops.push(Op::ForwardBackward { forward, backward });
    }
}

impl RankSteps<'_> {
    fn ops(&self) -> Vec<Op> {
        let (h, n, m) = (self.half_rank, self.half_ranks, self.per_phase);
        let mut o = Ops {
            chunk_of: self.chunk_of,
            next_forward: [0; 2],
            next_backward: [0; 2],
            pending_weights: VecDeque::new(),
            ops: Vec::new(),
        };
        // nF0
        for _ in 0..2 * (n - h - 1) {
            o.forward(0);
        }
        // nF0F1
        for _ in 0..h + 1 {
            o.forward(0);
            o.forward(1);
        }
        // nB1W1F1
        for _ in 0..n - h - 1 {
            o.backward(1, true);
            o.weight();
            o.forward(1);
        }
        // nF0B1F1B0, the main step
        for i in 0..m + h + 1 - 2 * n {
            if i == 0 && self.middle {
                o.forward(0);
                o.backward(1, false);
            } else {
                o.forward_backward(0, 1);
            }
            o.forward_backward(1, 0);
        }
        // nB1F1B0
        for _ in 0..n - h - 1 {
            o.backward(1, false);
            o.forward_backward(1, 0);
        }
        // nB1B0: from the middle pair on, inputs only, so that the W fill the drain. Where
        // the switch falls (before B1 or before B0) depends on h's parity, as in the code.
        let (steps, mut zero_bubble) = (h + 1, false);
        for i in 0..steps {
            if i == steps / 2 && h % 2 == 1 {
                zero_bubble = true;
            }
            o.backward(1, zero_bubble);
            if i == steps / 2 && h % 2 == 0 {
                zero_bubble = true;
            }
            o.backward(0, zero_bubble);
        }
        // nWB0
        for _ in 0..n - h - 1 {
            o.weight();
            o.backward(0, true);
        }
        // nW
        for _ in 0..h + 1 {
            o.weight();
        }
        debug_assert!(o.pending_weights.is_empty());
        o.ops
    }
}
