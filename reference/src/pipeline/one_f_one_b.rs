//! 1F1B and ZB1P: one stage per rank, one direction.
//!
//! **1F1B** (PipeDream-flush / Megatron's non-interleaved schedule): rank r runs P − r − 1
//! warm-up forwards, then alternates one forward and one full backward, then drains the
//! remaining backwards.
//!
//! **ZB1P** is ZB-H1 of Qi et al. (arXiv:2401.10241, §3.1): the same order with each
//! backward split into the backward for inputs (which the previous stage waits for) and the
//! backward for weights (which nobody waits for). Rank r keeps the last r weight backwards
//! pending and runs each once r newer ones are queued, then the pending ones at the end:
//! the last stages, which would idle at the end of 1F1B, fill that time with their W, and
//! at most P chunks are held at once, as in 1F1B.

use super::{Chunk, Op, Schedule, ScheduleKind};
use std::collections::VecDeque;

/// 1F1B on `ranks` ranks for `micro_batches` micro-batches.
pub fn one_f_one_b(ranks: usize, micro_batches: usize) -> Schedule {
    build(ScheduleKind::OneFOneB, ranks, micro_batches)
}

/// ZB-H1 on `ranks` ranks for `micro_batches` micro-batches.
pub fn zero_bubble_h1(ranks: usize, micro_batches: usize) -> Schedule {
    build(ScheduleKind::Zb1p, ranks, micro_batches)
}

fn build(kind: ScheduleKind, ranks: usize, micro_batches: usize) -> Schedule {
    let ops = (0..ranks)
        .map(|rank| {
            let chunk = |micro_batch| Chunk { direction: 0, micro_batch, stage: rank };
            let warm_up = (ranks - rank - 1).min(micro_batches);
            // Forwards in order of micro-batch, then backwards in the same order: the op list
            // interleaves the two streams.
            let mut ops: Vec<Op> = (0..warm_up).map(|m| Op::Forward { chunk: chunk(m) }).collect();
            let mut pending_weights = VecDeque::new();
            let mut backward = |m: usize, ops: &mut Vec<Op>| {
                if kind == ScheduleKind::OneFOneB {
                    ops.push(Op::Backward { chunk: chunk(m) });
                    return;
                }
                ops.push(Op::BackwardInput { chunk: chunk(m) });
                pending_weights.push_back(m);
                if pending_weights.len() > rank {
                    let w = pending_weights.pop_front().expect("just pushed");
                    ops.push(Op::BackwardWeight { chunk: chunk(w) });
                }
            };
            for m in 0..micro_batches {
                if m + warm_up < micro_batches {
                    ops.push(Op::Forward { chunk: chunk(m + warm_up) });
                }
                backward(m, &mut ops);
            }
            ops.extend(pending_weights.drain(..).map(|w| Op::BackwardWeight { chunk: chunk(w) }));
            ops
        })
        .collect();
    Schedule { kind, ranks, micro_batches, directions: 1, stages: ranks, ops }
}
