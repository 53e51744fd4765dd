//! The discrete-event simulation of a [`Schedule`] and what is measured on its timeline.

use super::{table2, Chunk, ChunkTimes, Op, Schedule, ScheduleKind};
use crate::error::{Error, Result};
use serde::Serialize;
use std::collections::HashMap;

/// One op as it ran.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Interval {
    pub op: Op,
    pub start: f64,
    pub end: f64,
}

/// Every rank's ops with their times.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Timeline {
    pub ranks: Vec<Vec<Interval>>,
    pub times: ChunkTimes,
}

/// What another op can wait for: a chunk's forward, its gradient for inputs (which the
/// previous stage needs), its gradient for weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Event {
    Forward(Chunk),
    InputGradient(Chunk),
    WeightGradient(Chunk),
}

/// The single-chunk parts of an op: an overlapped op is its forward and its backward.
fn parts(op: &Op) -> Vec<Op> {
    match *op {
        Op::ForwardBackward { forward, backward } => {
            vec![Op::Forward { chunk: forward }, Op::Backward { chunk: backward }]
        }
        single => vec![single],
    }
}

/// What a single-chunk op waits for: the previous stage's forward, the next stage's
/// backward for inputs (the last stage's backward starts from its own forward: the loss), the
/// same chunk's backward for inputs (a W).
fn needs(op: &Op, stages: usize) -> Option<Event> {
    match *op {
        Op::Forward { chunk } if chunk.stage == 0 => None,
        Op::Forward { chunk } => Some(Event::Forward(Chunk { stage: chunk.stage - 1, ..chunk })),
        Op::Backward { chunk } | Op::BackwardInput { chunk } if chunk.stage + 1 == stages => {
            Some(Event::Forward(chunk))
        }
        Op::Backward { chunk } | Op::BackwardInput { chunk } => {
            Some(Event::InputGradient(Chunk { stage: chunk.stage + 1, ..chunk }))
        }
        Op::BackwardWeight { chunk } => Some(Event::InputGradient(chunk)),
        Op::ForwardBackward { .. } => unreachable!("split by parts()"),
    }
}

/// What a single-chunk op makes available when it ends.
fn gives(op: &Op) -> Vec<Event> {
    match *op {
        Op::Forward { chunk } => vec![Event::Forward(chunk)],
        Op::Backward { chunk } => vec![Event::InputGradient(chunk), Event::WeightGradient(chunk)],
        Op::BackwardInput { chunk } => vec![Event::InputGradient(chunk)],
        Op::BackwardWeight { chunk } => vec![Event::WeightGradient(chunk)],
        Op::ForwardBackward { .. } => unreachable!("split by parts()"),
    }
}

/// The rank whose op gives `event`.
fn rank_giving(schedule: &Schedule, event: Event) -> usize {
    let (Event::Forward(c) | Event::InputGradient(c) | Event::WeightGradient(c)) = event;
    schedule.rank_of(c.direction, c.stage)
}

/// Runs `schedule`: each rank takes its ops in order, each as soon as the rank is free and
/// what it needs has ended (plus `times.comm` when that ran on another rank). A schedule
/// whose ranks wait on each other forever is refused.
pub fn simulate(schedule: &Schedule, times: &ChunkTimes) -> Result<Timeline> {
    times.check()?;
    let mut ended: HashMap<Event, f64> = HashMap::new();
    let mut next = vec![0; schedule.ranks];
    let mut free_at = vec![0.0f64; schedule.ranks];
    let mut ranks: Vec<Vec<Interval>> = vec![Vec::new(); schedule.ranks];
    let total: usize = schedule.ops.iter().map(Vec::len).sum();
    let mut placed = 0;
    while placed < total {
        let mut progressed = false;
        for rank in 0..schedule.ranks {
            // Each rank places as many ops as are ready, then lets the others catch up.
            while let Some(op) = schedule.ops[rank].get(next[rank]) {
                let parts = parts(op);
                let mut start = free_at[rank];
                let mut ready = true;
                for need in parts.iter().filter_map(|p| needs(p, schedule.stages)) {
                    match ended.get(&need) {
                        Some(&end) => {
                            let comm = if rank_giving(schedule, need) == rank { 0.0 } else { times.comm };
                            start = start.max(end + comm);
                        }
                        None => ready = false,
                    }
                }
                if !ready {
                    break;
                }
                let end = start + op.duration(times);
                for event in parts.iter().flat_map(gives) {
                    ended.insert(event, end);
                }
                ranks[rank].push(Interval { op: *op, start, end });
                free_at[rank] = end;
                next[rank] += 1;
                placed += 1;
                progressed = true;
            }
        }
        if !progressed {
            let stuck: Vec<String> = (0..schedule.ranks)
                .filter_map(|r| schedule.ops[r].get(next[r]).map(|op| format!("rank {r} at {}", op.label())))
                .collect();
            return Err(Error::Input(format!(
                "{} schedule deadlocks: every rank waits ({})",
                schedule.kind.name(),
                stuck.join(", ")
            )));
        }
    }
    Ok(Timeline { ranks, times: *times })
}

/// One rank's share of a timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RankReport {
    /// Time spent running ops.
    pub busy: f64,
    /// Makespan minus busy: the rank's idle time.
    pub bubble: f64,
    /// The most chunks whose activations the rank holds at once (from the start of a
    /// chunk's forward to the end of its last backward piece).
    pub peak_activations: usize,
    /// Distinct stages whose parameters the rank holds.
    pub stages_held: usize,
}

/// A timeline measured, beside Table 2's formulas.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub schedule: ScheduleKind,
    pub ranks: usize,
    pub micro_batches: usize,
    pub times: ChunkTimes,
    /// The end of the last op.
    pub makespan: f64,
    pub per_rank: Vec<RankReport>,
    /// The largest rank bubble: what Table 2's "Bubble" column gives.
    pub bubble: f64,
    /// Table 2's bubble for these times (PP = the pipeline's stages: 2P for DualPipeV).
    pub table2_bubble: f64,
    /// Whether the conditions under which the formula is exact hold (see [`table2`]).
    pub table2_exact: bool,
    /// The largest rank peak of activations, and Table 2's value.
    pub peak_activations: usize,
    pub table2_activations: usize,
    /// Table 2's parameter column: stage copies per rank against 1F1B (compare
    /// [`RankReport::stages_held`]).
    pub table2_parameter_factor: usize,
    /// Copies of the whole model across the ranks (stages held / stages).
    pub model_copies: f64,
}

impl Timeline {
    pub fn makespan(&self) -> f64 {
        self.ranks.iter().flatten().map(|i| i.end).fold(0.0, f64::max)
    }

    /// Busy time, bubble, peak activations and stages held of each rank, and the totals.
    pub fn report(&self, schedule: &Schedule) -> Report {
        let makespan = self.makespan();
        let per_rank: Vec<RankReport> = self
            .ranks
            .iter()
            .map(|intervals| {
                let busy: f64 = intervals.iter().map(|i| i.end - i.start).sum();
                let mut stages: Vec<usize> =
                    intervals.iter().flat_map(|i| parts(&i.op)).map(|p| p.chunk().stage).collect();
                stages.sort();
                stages.dedup();
                RankReport {
                    busy,
                    bubble: makespan - busy,
                    peak_activations: peak_activations(intervals),
                    stages_held: stages.len(),
                }
            })
            .collect();
        let held: usize = per_rank.iter().map(|r| r.stages_held).sum();
        let kind = schedule.kind;
        let stages = kind.table_stages(schedule.ranks);
        Report {
            schedule: kind,
            ranks: schedule.ranks,
            micro_batches: schedule.micro_batches,
            times: self.times,
            makespan,
            bubble: per_rank.iter().map(|r| r.bubble).fold(0.0, f64::max),
            peak_activations: per_rank.iter().map(|r| r.peak_activations).max().unwrap_or(0),
            table2_bubble: table2::bubble(kind, stages, &self.times),
            table2_exact: table2::bubble_is_exact(kind, stages, schedule.micro_batches, &self.times),
            table2_activations: table2::activations(kind, stages),
            table2_parameter_factor: table2::parameter_factor(kind),
            model_copies: held as f64 / stages as f64,
            per_rank,
        }
    }

    /// What is wrong with this timeline as a run of `schedule`: an op missing, doubled or
    /// on the wrong rank, two ops of a rank at once, an op before what it needs, a time that
    /// is not the op's duration. Empty for a valid one.
    pub fn violations(&self, schedule: &Schedule) -> Vec<String> {
        let mut wrong = Vec::new();
        let mut ended: HashMap<Event, (f64, usize)> = HashMap::new();
        for (rank, intervals) in self.ranks.iter().enumerate() {
            if intervals.len() != schedule.ops[rank].len() {
                wrong.push(format!("rank {rank} ran {} ops of {}", intervals.len(), schedule.ops[rank].len()));
            }
            for (i, iv) in intervals.iter().enumerate() {
                if (iv.end - iv.start - iv.op.duration(&self.times)).abs() > 1e-9 || iv.start < 0.0 {
                    wrong.push(format!("rank {rank}: {} runs {}..{}", iv.op.label(), iv.start, iv.end));
                }
                if i > 0 && iv.start < intervals[i - 1].end - 1e-9 {
                    wrong.push(format!(
                        "rank {rank}: {} starts before {} ends",
                        iv.op.label(),
                        intervals[i - 1].op.label()
                    ));
                }
                for part in parts(&iv.op) {
                    let c = part.chunk();
                    if schedule.rank_of(c.direction, c.stage) != rank {
                        wrong.push(format!("rank {rank} runs {} of stage {}", part.label(), c.stage));
                    }
                    for event in gives(&part) {
                        if ended.insert(event, (iv.end, rank)).is_some() {
                            wrong.push(format!("{event:?} is computed twice"));
                        }
                    }
                }
            }
        }
        // Every chunk of every direction: one forward, one input and one weight gradient.
        for direction in 0..schedule.directions {
            for micro_batch in 0..schedule.micro_batches_per_direction() {
                for stage in 0..schedule.stages {
                    let c = Chunk { direction, micro_batch, stage };
                    for event in [Event::Forward(c), Event::InputGradient(c), Event::WeightGradient(c)] {
                        if !ended.contains_key(&event) {
                            wrong.push(format!("{event:?} is never computed"));
                        }
                    }
                }
            }
        }
        for (rank, intervals) in self.ranks.iter().enumerate() {
            for iv in intervals {
                for need in parts(&iv.op).iter().filter_map(|p| needs(p, schedule.stages)) {
                    let Some(&(end, from)) = ended.get(&need) else { continue };
                    let comm = if from == rank { 0.0 } else { self.times.comm };
                    if iv.start < end + comm - 1e-9 {
                        wrong.push(format!(
                            "rank {rank}: {} starts at {} before {need:?} ends at {end}",
                            iv.op.label(),
                            iv.start
                        ));
                    }
                }
            }
        }
        wrong
    }
}

/// The most chunks held at once: +1 at a forward's start, −1 at the end of the chunk's full
/// backward or of its W; at equal times the frees come first.
fn peak_activations(intervals: &[Interval]) -> usize {
    let mut changes: Vec<(f64, i64)> = Vec::new();
    for iv in intervals {
        for part in parts(&iv.op) {
            match part {
                Op::Forward { .. } => changes.push((iv.start, 1)),
                Op::Backward { .. } | Op::BackwardWeight { .. } => changes.push((iv.end, -1)),
                _ => {}
            }
        }
    }
    changes.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut held = 0i64;
    let mut peak = 0i64;
    for (_, change) in changes {
        held += change;
        peak = peak.max(held);
    }
    peak as usize
}

impl Op {
    /// The chunk of a single-chunk op (the forward's, for an overlapped one).
    pub fn chunk(&self) -> Chunk {
        match *self {
            Op::Forward { chunk }
            | Op::Backward { chunk }
            | Op::BackwardInput { chunk }
            | Op::BackwardWeight { chunk } => chunk,
            Op::ForwardBackward { forward, .. } => forward,
        }
    }
}
