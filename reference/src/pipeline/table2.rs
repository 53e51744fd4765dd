//! Table 2 of DeepSeek-V3 (and the DualPipe README's table): each schedule's bubble and
//! activation memory as formulas in PP, F, B, W and F&B, and the conditions under which the
//! simulation ([`super::simulate`]) reproduces them exactly.
//!
//! PP is the number of pipeline stages: P ranks for 1F1B, ZB1P and DualPipe, 2P stages for
//! DualPipeV on P ranks (the README's table compares schedules "based on the same number
//! of PP stages"; DualPipeV needs PP/2 devices).
//!
//! | schedule | bubble | activations | exact (largest rank bubble = formula) when |
//! |---|---|---|---|
//! | 1F1B | (PP − 1)(F + B) | PP | always (any M ≥ 1, any positive times) |
//! | ZB1P | (PP − 1)(F + B − 2W) | PP | M ≥ PP, W ≤ F and W ≤ B − W |
//! | DualPipe, DualPipeV | (PP/2 − 1)(F&B + B − 3W) | PP + 1 | PP = 2 (no bubble), or F = B − W, W ≤ F and max(F, B) ≤ F&B ≤ F + B |
//!
//! All with no communication time (Table 2 counts none) and, for DualPipe, M ≥ 2P as its
//! code requires. The activations column is the largest rank's peak for M ≥ PP (with fewer
//! micro-batches 1F1B holds only M).
//!
//! **Findings** (held by the tests in `pipeline/tests.rs`):
//! - ZB1P's formula counts each W as filling a gap of its own length; with W longer than
//!   the forward or the backward for inputs it does not fit and the bubble is larger
//!   (PP = 4, F = 1, B = 3, W = 2: 3 simulated against 0).
//! - DualPipe's formula holds only when a forward is as long as a backward for inputs
//!   (F = B − W, as the equal cell widths of the paper's Figure 5 draw them): for
//!   PP = 8, M = 16, B = 3, W = 1, F&B = F + B, the bubble is 11 for F = 1 (formula 12) and
//!   12 for F = 2, B = 2 (formula 9). With F&B < F + B it is the largest rank's bubble: the
//!   outer ranks, which run more overlapped chunks, idle less (PP = 8, F = 1, B = 2, W = 1,
//!   F&B = 2.5: [3.5, 4, 4.5, 4.5, 4.5, 4.5, 4, 3.5] against 4.5). With F&B > F + B (a slower
//!   overlap) it fails from PP = 8 (F&B = 3.5: 8.5 against 7.5).

use super::{ChunkTimes, ScheduleKind};

/// Table 2's bubble for `kind` with `stages` = PP.
pub fn bubble(kind: ScheduleKind, stages: usize, t: &ChunkTimes) -> f64 {
    let pp = stages as f64;
    match kind {
        ScheduleKind::OneFOneB => (pp - 1.0) * (t.forward + t.backward),
        ScheduleKind::Zb1p => (pp - 1.0) * (t.forward + t.backward - 2.0 * t.weight),
        ScheduleKind::DualPipe | ScheduleKind::DualPipeV => {
            (pp / 2.0 - 1.0) * (t.forward_backward + t.backward - 3.0 * t.weight)
        }
    }
}

/// Table 2's activation memory per rank, in chunks (one micro-batch on one stage).
pub fn activations(kind: ScheduleKind, stages: usize) -> usize {
    match kind {
        ScheduleKind::OneFOneB | ScheduleKind::Zb1p => stages,
        ScheduleKind::DualPipe | ScheduleKind::DualPipeV => stages + 1,
    }
}

/// Table 2's parameter column: copies of the stage parameters per rank, against 1F1B.
pub fn parameter_factor(kind: ScheduleKind) -> usize {
    match kind {
        ScheduleKind::OneFOneB | ScheduleKind::Zb1p => 1,
        ScheduleKind::DualPipe | ScheduleKind::DualPipeV => 2,
    }
}

/// Whether the conditions of the table above hold, under which the simulated bubble (the
/// largest rank's) equals [`bubble`].
pub fn bubble_is_exact(kind: ScheduleKind, stages: usize, micro_batches: usize, t: &ChunkTimes) -> bool {
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0);
    let at_most = |a: f64, b: f64| a <= b || close(a, b);
    let weight_fits = at_most(t.weight, t.forward) && at_most(t.weight, t.backward - t.weight);
    t.comm == 0.0
        && match kind {
            ScheduleKind::OneFOneB => true,
            ScheduleKind::Zb1p => micro_batches >= stages && weight_fits,
            ScheduleKind::DualPipe | ScheduleKind::DualPipeV => {
                stages == 2
                    || (close(t.forward, t.backward - t.weight)
                        && weight_fits
                        && at_most(t.forward.max(t.backward), t.forward_backward)
                        && at_most(t.forward_backward, t.forward + t.backward))
            }
        }
}
