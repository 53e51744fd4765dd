//! Pipeline-parallel schedules and their bubbles (DeepSeek-V3 §3.2.1, Table 2, Figure 5;
//! deepseek-ai/DualPipe): 1F1B, ZB1P (ZB-H1 of Qi et al., "Zero Bubble Pipeline
//! Parallelism"), DualPipe and DualPipeV, simulated event by event.
//!
//! A [`Schedule`] is, for each rank, the ordered list of the [`Op`]s it runs: a forward
//! chunk (time F), a full backward chunk (B), a backward for inputs only (B − W), a backward
//! for weights (W), or a forward and a backward chunk overlapped (F&B). [`simulate`] starts
//! each op as soon as its rank is free and the ops it needs have ended (plus
//! [`ChunkTimes::comm`] when they ran on another rank); [`Timeline::report`] measures it.
//!
//! | paper | code |
//! |---|---|
//! | 1F1B | [`one_f_one_b::one_f_one_b`] |
//! | ZB1P (ZB-H1) | [`one_f_one_b::zero_bubble_h1`] |
//! | DualPipe (§3.2.1, Figure 5; `dualpipe.DualPipe.step`) | [`dualpipe::dualpipe`] |
//! | DualPipeV (`dualpipe.DualPipeV.step`, Sea AI Lab's "cut-in-half") | [`dualpipe::dualpipe_v`] |
//! | Table 2, column "Bubble" | [`table2::bubble`], against [`Report::bubble`] |
//! | Table 2, column "Parameter" | [`RankReport::stages_held`], [`Report::model_copies`] |
//! | Table 2, column "Activation" | [`table2::activations`], against [`RankReport::peak_activations`] |
//! | Figure 5 | [`gantt::Gantt`] |
//!
//! **What is measured.** A rank's *bubble* is the makespan (from 0 to the end of the last op
//! on any rank) minus the time that rank spends running ops; [`Report::bubble`] is the
//! largest over the ranks, which is what Table 2's formulas give (under the conditions in
//! [`table2`]). A rank's *activations* count its chunks (micro-batch × stage) held at once:
//! a chunk is held from the start of its forward (the activations are being written) to the
//! end of its last backward piece (B, or W when the backward is split: W still reads them).
//! (Counting from the end of the forward instead would miss, on DualPipe's outer ranks, the
//! chunk whose forward ends in the same F&B op that frees another: they would show PP, not
//! the PP + 1 the op holds while it runs.)
//! *Parameters* are counted in stages of the Table's PP-stage pipeline: a 1F1B rank holds
//! one, a DualPipe rank two (stage r and its mirror PP−1−r), a DualPipeV rank two (stages r
//! and 2P−1−r of a 2P-stage pipeline).
//!
//! Stages and micro-batches: a micro-batch of direction `d` passes stages 0, 1, …, S−1
//! ([`Schedule::stages`]); [`Schedule::rank_of`] says which rank runs a stage. DualPipe
//! has two directions of M/2 micro-batches each (direction 0 enters at rank 0, direction 1
//! at rank P−1); the others one direction of M.

pub mod dualpipe;
pub mod gantt;
pub mod one_f_one_b;
mod simulate;
pub mod table2;
#[cfg(test)]
mod tests;

pub use gantt::Gantt;
pub use simulate::{simulate, Interval, RankReport, Report, Timeline};

use crate::error::{Error, Result};
use serde::Serialize;

/// The four schedules of Table 2 and the DualPipe README.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    OneFOneB,
    Zb1p,
    DualPipe,
    DualPipeV,
}

impl ScheduleKind {
    pub const ALL: [ScheduleKind; 4] =
        [ScheduleKind::OneFOneB, ScheduleKind::Zb1p, ScheduleKind::DualPipe, ScheduleKind::DualPipeV];

    /// The name on the command line (`1f1b`, `zb1p`, `dualpipe`, `dualpipev`).
    pub fn name(self) -> &'static str {
        match self {
            ScheduleKind::OneFOneB => "1f1b",
            ScheduleKind::Zb1p => "zb1p",
            ScheduleKind::DualPipe => "dualpipe",
            ScheduleKind::DualPipeV => "dualpipev",
        }
    }

    pub fn parse(name: &str) -> Option<ScheduleKind> {
        ScheduleKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The stages of Table 2's pipeline ("PP") on `ranks` ranks: DualPipeV runs 2P stages.
    pub fn table_stages(self, ranks: usize) -> usize {
        if self == ScheduleKind::DualPipeV {
            2 * ranks
        } else {
            ranks
        }
    }
}

/// One micro-batch on one stage: the unit a forward or backward op works on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Chunk {
    /// 0, or 1 for DualPipe's micro-batches that enter at the last rank.
    pub direction: usize,
    /// Counted within its direction, from 0.
    pub micro_batch: usize,
    pub stage: usize,
}

/// One op of a rank's list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Op {
    /// A forward chunk: time F.
    Forward { chunk: Chunk },
    /// A full backward chunk, inputs and weights: time B.
    Backward { chunk: Chunk },
    /// The backward for inputs alone (zero bubble's "B"): time B − W.
    BackwardInput { chunk: Chunk },
    /// The backward for weights, after that chunk's [`Op::BackwardInput`]: time W.
    BackwardWeight { chunk: Chunk },
    /// A forward chunk and a full backward chunk of other micro-batches, overlapped: time F&B.
    ForwardBackward { forward: Chunk, backward: Chunk },
}

impl Op {
    /// How long the op runs.
    pub fn duration(&self, times: &ChunkTimes) -> f64 {
        match self {
            Op::Forward { .. } => times.forward,
            Op::Backward { .. } => times.backward,
            Op::BackwardInput { .. } => times.backward - times.weight,
            Op::BackwardWeight { .. } => times.weight,
            Op::ForwardBackward { .. } => times.forward_backward,
        }
    }

    /// The op in the notation of DualPipe's step names: `F`, `B`, `I` (backward for
    /// inputs), `W`, `FB` (overlapped), each with direction and micro-batch (`F0.3` is the
    /// forward of micro-batch 3 of direction 0).
    pub fn label(&self) -> String {
        let at = |c: &Chunk| format!("{}.{}", c.direction, c.micro_batch);
        match self {
            Op::Forward { chunk } => format!("F{}", at(chunk)),
            Op::Backward { chunk } => format!("B{}", at(chunk)),
            Op::BackwardInput { chunk } => format!("I{}", at(chunk)),
            Op::BackwardWeight { chunk } => format!("W{}", at(chunk)),
            Op::ForwardBackward { forward, backward } => format!("F{}+B{}", at(forward), at(backward)),
        }
    }
}

/// The time of each kind of chunk (Table 2's F, B, W, F&B), and of one point-to-point
/// transfer between ranks.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ChunkTimes {
    /// F: a forward chunk.
    pub forward: f64,
    /// B: a full backward chunk (inputs and weights).
    pub backward: f64,
    /// W: a backward for weights; the backward for inputs takes B − W.
    pub weight: f64,
    /// F&B: a forward and a backward chunk overlapped.
    pub forward_backward: f64,
    /// Added between an op and one it waits for on another rank; 0 in Table 2.
    pub comm: f64,
}

impl ChunkTimes {
    /// F, B and W with F&B = F + B (no overlap gain) and no communication time.
    pub fn new(forward: f64, backward: f64, weight: f64) -> ChunkTimes {
        ChunkTimes { forward, backward, weight, forward_backward: forward + backward, comm: 0.0 }
    }

    pub fn with_forward_backward(self, forward_backward: f64) -> ChunkTimes {
        ChunkTimes { forward_backward, ..self }
    }

    /// Refuses times a schedule cannot run: each flag named as the CLI spells it.
    pub fn check(&self) -> Result<()> {
        let positive = |name: &'static str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(Error::setting(name, format!("must be a positive time, got {v}")))
            }
        };
        positive("--f", self.forward)?;
        positive("--b", self.backward)?;
        positive("--w", self.weight)?;
        positive("--fb", self.forward_backward)?;
        if self.weight >= self.backward {
            return Err(Error::setting(
                "--w",
                format!(
                    "the backward for weights ({}) must be shorter than the full backward --b ({}): \
                     the backward for inputs takes B - W",
                    self.weight, self.backward
                ),
            ));
        }
        if !(self.comm.is_finite() && self.comm >= 0.0) {
            return Err(Error::setting("--comm", format!("must be a time >= 0, got {}", self.comm)));
        }
        Ok(())
    }
}

/// Each rank's ordered ops, and where each stage runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Schedule {
    pub kind: ScheduleKind,
    pub ranks: usize,
    /// All micro-batches, both directions together.
    pub micro_batches: usize,
    /// 1, or 2 for DualPipe.
    pub directions: usize,
    /// Stages a micro-batch passes (P, or 2P for DualPipeV).
    pub stages: usize,
    /// `ops[r]`: what rank r runs, in order.
    pub ops: Vec<Vec<Op>>,
}

impl Schedule {
    /// The schedule `kind` for `ranks` ranks and `micro_batches` micro-batches; refuses
    /// what the schedule cannot run, naming the flag.
    pub fn build(kind: ScheduleKind, ranks: usize, micro_batches: usize) -> Result<Schedule> {
        if ranks == 0 {
            return Err(Error::setting("--ranks", "must be at least 1"));
        }
        if micro_batches == 0 {
            return Err(Error::setting("--micro-batches", "must be at least 1"));
        }
        match kind {
            ScheduleKind::OneFOneB => Ok(one_f_one_b::one_f_one_b(ranks, micro_batches)),
            ScheduleKind::Zb1p => Ok(one_f_one_b::zero_bubble_h1(ranks, micro_batches)),
            ScheduleKind::DualPipe => dualpipe::dualpipe(ranks, micro_batches),
            ScheduleKind::DualPipeV => dualpipe::dualpipe_v(ranks, micro_batches),
        }
    }

    /// The rank that runs `stage` for micro-batches of `direction`.
    pub fn rank_of(&self, direction: usize, stage: usize) -> usize {
        match self.kind {
            ScheduleKind::OneFOneB | ScheduleKind::Zb1p => stage,
            // Direction 1 enters at the last rank: rank r runs its stage P-1-r, so each rank
            // holds stage r and its mirror P-1-r.
            ScheduleKind::DualPipe if direction == 1 => self.ranks - 1 - stage,
            ScheduleKind::DualPipe => stage,
            // The V: down the ranks for stages 0..P, back up for P..2P.
            ScheduleKind::DualPipeV if stage < self.ranks => stage,
            ScheduleKind::DualPipeV => 2 * self.ranks - 1 - stage,
        }
    }

    /// Micro-batches in each direction.
    pub fn micro_batches_per_direction(&self) -> usize {
        self.micro_batches / self.directions
    }
}
