//! Table 2's formulas (the paper), the schedule's validity, and DualPipe's order of
//! operations as its published steps give it, derived by hand for small cases.

use super::*;
use crate::error::Error;

fn run(kind: ScheduleKind, ranks: usize, micro_batches: usize, times: ChunkTimes) -> (Schedule, Timeline, Report) {
    let schedule = Schedule::build(kind, ranks, micro_batches).unwrap();
    let timeline = simulate(&schedule, &times).unwrap();
    let violations = timeline.violations(&schedule);
    assert!(violations.is_empty(), "{} P={ranks} M={micro_batches}: {violations:?}", kind.name());
    let report = timeline.report(&schedule);
    (schedule, timeline, report)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

/// F, B, W on a grid of ratios, W < B.
fn grid() -> Vec<(f64, f64, f64)> {
    let values = [0.5, 1.0, 1.5, 2.0, 3.0];
    let mut times = Vec::new();
    for f in values {
        for b in values {
            for w in values.into_iter().filter(|&w| w < b) {
                times.push((f, b, w));
            }
        }
    }
    times
}

#[test]
fn table2_formulas_at_one_point_are_the_papers_arithmetic() {
    // PP = 8, F = 1, B = 2, W = 1, F&B = 3, by hand from Table 2.
    let t = ChunkTimes::new(1.0, 2.0, 1.0);
    assert_eq!(table2::bubble(ScheduleKind::OneFOneB, 8, &t), 7.0 * 3.0);
    assert_eq!(table2::bubble(ScheduleKind::Zb1p, 8, &t), 7.0 * 1.0);
    assert_eq!(table2::bubble(ScheduleKind::DualPipe, 8, &t), 3.0 * 2.0);
    assert_eq!(table2::activations(ScheduleKind::DualPipe, 8), 9);
    assert_eq!(table2::parameter_factor(ScheduleKind::DualPipeV), 2);
}

#[test]
fn one_f_one_b_bubble_is_table2s_on_every_rank() {
    for ranks in [1usize, 2, 3, 4, 8] {
        for micro_batches in [1, ranks.saturating_sub(1).max(1), ranks, 2 * ranks + 1] {
            for (f, b, w) in grid() {
                let (_, _, r) = run(ScheduleKind::OneFOneB, ranks, micro_batches, ChunkTimes::new(f, b, w));
                let formula = (ranks as f64 - 1.0) * (f + b);
                assert!(r.table2_exact);
                assert!(r.per_rank.iter().all(|rank| close(rank.bubble, formula)), "P={ranks} M={micro_batches}");
                // Rank 0 holds min(M, P) micro-batches: Table 2's PP once M ≥ P.
                assert_eq!(r.peak_activations, micro_batches.min(ranks));
                assert!(r.per_rank.iter().all(|rank| rank.stages_held == 1));
            }
        }
    }
}

#[test]
fn zb1p_bubble_is_table2s_when_each_w_fits_a_gap() {
    for ranks in [2, 3, 4, 8] {
        for micro_batches in [ranks, 2 * ranks + 1] {
            for (f, b, w) in grid().into_iter().filter(|&(f, b, w)| w <= f && w <= b - w) {
                let (_, _, r) = run(ScheduleKind::Zb1p, ranks, micro_batches, ChunkTimes::new(f, b, w));
                let formula = (ranks as f64 - 1.0) * (f + b - 2.0 * w);
                assert!(r.table2_exact);
                assert!(close(r.bubble, formula), "P={ranks} M={micro_batches} F={f} B={b} W={w}: {}", r.bubble);
                // As much memory as 1F1B (ZB-H1's design), on every rank.
                assert!(r.per_rank.iter().all(|rank| rank.peak_activations == ranks));
            }
        }
    }
}

#[test]
fn zb1p_formula_undercounts_a_w_longer_than_its_gap() {
    // Finding: W > F, or W > B - W, leaves idle time the formula does not count.
    for (f, b, w) in [(1.0, 3.0, 2.0), (0.5, 2.0, 1.0)] {
        let (_, _, r) = run(ScheduleKind::Zb1p, 4, 8, ChunkTimes::new(f, b, w));
        assert!(!r.table2_exact);
        assert!(r.bubble > r.table2_bubble + 0.1, "F={f} B={b} W={w}");
    }
    // And with fewer micro-batches than stages.
    let (_, _, r) = run(ScheduleKind::Zb1p, 4, 3, ChunkTimes::new(1.0, 2.0, 1.0));
    assert!(!r.table2_exact && r.bubble > r.table2_bubble + 0.1);
}

/// Times under which Table 2's DualPipe formula holds: F = B − W, W ≤ F, F&B between
/// max(F, B) and F + B.
fn dualpipe_times() -> Vec<ChunkTimes> {
    let mut times = Vec::new();
    for w in [0.5f64, 1.0, 1.5] {
        for f in [w, 1.5 * w, 2.0 * w, 3.0 * w] {
            let f: f64 = f;
            let b = f + w;
            for fb in [b.max(f), (b + f + b.max(f)) / 2.0, f + b] {
                times.push(ChunkTimes::new(f, b, w).with_forward_backward(fb));
            }
        }
    }
    times
}

#[test]
fn dualpipe_and_dualpipev_bubble_and_memory_are_table2s() {
    for (kind, ranks) in [(ScheduleKind::DualPipe, [2, 4, 6, 8]), (ScheduleKind::DualPipeV, [1, 2, 3, 4])] {
        for ranks in ranks {
            let stages = kind.table_stages(ranks);
            for micro_batches in [2 * ranks, 2 * ranks + 2, 4 * ranks] {
                for t in dualpipe_times() {
                    let (_, _, r) = run(kind, ranks, micro_batches, t);
                    let pp = stages as f64;
                    let formula = (pp / 2.0 - 1.0) * (t.forward_backward + t.backward - 3.0 * t.weight);
                    let at = format!("{} P={ranks} M={micro_batches} {t:?}", kind.name());
                    assert!(r.table2_exact, "{at}");
                    assert!(close(r.bubble, formula), "{at}: {}", r.bubble);
                    if t.forward_backward == t.forward + t.backward {
                        // Without an overlap gain every rank idles the same.
                        assert!(r.per_rank.iter().all(|rank| close(rank.bubble, formula)), "{at}");
                    }
                    assert!(r.per_rank.iter().all(|rank| rank.peak_activations == stages + 1), "{at}");
                    assert!(r.per_rank.iter().all(|rank| rank.stages_held == 2), "{at}");
                }
            }
        }
    }
}

#[test]
fn dualpipe_formula_misses_when_forward_and_input_backward_differ() {
    // Findings (PP = 8, M = 16): the formula is exact only for F = B − W.
    let t = |f, b, w| ChunkTimes::new(f, b, w);
    let (_, _, shorter_forward) = run(ScheduleKind::DualPipe, 8, 16, t(1.0, 3.0, 1.0));
    assert!(!shorter_forward.table2_exact && shorter_forward.bubble < shorter_forward.table2_bubble - 0.1);
    let (_, _, longer_forward) = run(ScheduleKind::DualPipe, 8, 16, t(2.0, 2.0, 1.0));
    assert!(!longer_forward.table2_exact && longer_forward.bubble > longer_forward.table2_bubble + 0.1);
    let (_, _, long_weight) = run(ScheduleKind::DualPipe, 8, 16, t(1.0, 2.0, 1.5));
    assert!(!long_weight.table2_exact && long_weight.bubble > long_weight.table2_bubble + 0.1);
    // With an overlap gain the outer ranks idle less than the formula, the middle ones as much.
    let (_, _, gain) = run(ScheduleKind::DualPipe, 8, 16, t(1.0, 2.0, 1.0).with_forward_backward(2.5));
    assert!(gain.per_rank[0].bubble < gain.table2_bubble - 0.1);
    assert!(close(gain.per_rank[3].bubble, gain.table2_bubble));
}

#[test]
fn every_schedule_is_valid_with_and_without_communication_time() {
    for kind in ScheduleKind::ALL {
        for ranks in [2, 4, 6] {
            for comm in [0.0, 0.25] {
                let times = ChunkTimes { comm, ..ChunkTimes::new(1.0, 2.5, 0.75).with_forward_backward(3.0) };
                let (schedule, timeline, _) = run(kind, ranks, 2 * ranks + 2, times);
                let ops: usize = schedule.ops.iter().map(Vec::len).sum();
                assert_eq!(timeline.ranks.iter().map(Vec::len).sum::<usize>(), ops);
            }
        }
    }
}

#[test]
fn violations_catch_a_moved_op_and_a_missing_one() {
    let schedule = Schedule::build(ScheduleKind::OneFOneB, 3, 4).unwrap();
    let timeline = simulate(&schedule, &ChunkTimes::new(1.0, 2.0, 1.0)).unwrap();
    // Rank 1's first forward moved to time 0, before rank 0's forward ends.
    let mut early = timeline.clone();
    let first = &mut early.ranks[1][0];
    (first.start, first.end) = (0.0, 1.0);
    assert!(early.violations(&schedule).iter().any(|v| v.contains("before")));
    let mut missing = timeline.clone();
    missing.ranks[2].pop();
    assert!(missing.violations(&schedule).iter().any(|v| v.contains("never computed")));
    // A rank asked to run a backward before its forward waits forever.
    let mut backwards = schedule.clone();
    backwards.ops[2].swap(0, 1);
    assert!(
        matches!(simulate(&backwards, &ChunkTimes::new(1.0, 2.0, 1.0)), Err(Error::Input(m)) if m.contains("deadlock"))
    );
}

fn order(schedule: &Schedule, label: impl Fn(&Op) -> String) -> Vec<String> {
    schedule.ops.iter().map(|ops| ops.iter().map(&label).collect::<Vec<_>>().join(" ")).collect()
}

#[test]
fn dualpipe_order_is_the_published_steps() {
    // DualPipe.step for 4 ranks and 8 micro-batches (4 a direction), written out by hand
    // from its steps nF0, nF0F1, nB1W1F1, nF0B1F1B0, nB1F1B0, nB1B0, nWB0, nW with
    // n = 2, h = 0 for ranks 0 and 3, h = 1 (the middle ranks) for 1 and 2. `Fd.m` is the
    // forward of micro-batch m of direction d, `B` a full backward, `I` inputs only, `W`
    // weights, `x+y` overlapped. Ranks 2 and 3 mirror 1 and 0 with the directions swapped.
    let expected = [
        "F0.0 F0.1 F0.2 F1.0 I1.0 W1.0 F1.1 F0.3+B1.1 F1.2+B0.0 B1.2 F1.3+B0.1 B1.3 I0.2 W0.2 I0.3 W0.3",
        "F0.0 F1.0 F0.1 F1.1 F0.2 B1.0 F1.2+B0.0 F0.3+B1.1 F1.3+B0.1 B1.2 B0.2 I1.3 I0.3 W1.3 W0.3",
        "F1.0 F0.0 F1.1 F0.1 F1.2 B0.0 F0.2+B1.0 F1.3+B0.1 F0.3+B1.1 B0.2 B1.2 I0.3 I1.3 W0.3 W1.3",
        "F1.0 F1.1 F1.2 F0.0 I0.0 W0.0 F0.1 F1.3+B0.1 F0.2+B1.0 B0.2 F0.3+B1.1 B0.3 I1.2 W1.2 I1.3 W1.3",
    ];
    let schedule = Schedule::build(ScheduleKind::DualPipe, 4, 8).unwrap();
    assert_eq!(order(&schedule, Op::label), expected);
}

#[test]
fn dualpipev_order_is_the_published_steps() {
    // DualPipeV.step for 2 ranks (4 stages) and 4 micro-batches, by hand as above with
    // n = 2 and h = the rank; `Fs:m` is the forward of micro-batch m on stage s.
    let expected = [
        "F0:0 F0:1 F0:2 F3:0 I3:0 W3:0 F3:1 F0:3+B3:1 F3:2+B0:0 B3:2 F3:3+B0:1 B3:3 I0:2 W0:2 I0:3 W0:3",
        "F1:0 F2:0 F1:1 F2:1 F1:2 B2:0 F2:2+B1:0 F1:3+B2:1 F2:3+B1:1 B2:2 B1:2 I2:3 I1:3 W2:3 W1:3",
    ];
    let by_stage = |op: &Op| {
        let at = |c: &Chunk| format!("{}:{}", c.stage, c.micro_batch);
        match op {
            Op::Forward { chunk } => format!("F{}", at(chunk)),
            Op::Backward { chunk } => format!("B{}", at(chunk)),
            Op::BackwardInput { chunk } => format!("I{}", at(chunk)),
            Op::BackwardWeight { chunk } => format!("W{}", at(chunk)),
            Op::ForwardBackward { forward, backward } => format!("F{}+B{}", at(forward), at(backward)),
        }
    };
    let schedule = Schedule::build(ScheduleKind::DualPipeV, 2, 4).unwrap();
    assert_eq!(order(&schedule, by_stage), expected);
}

#[test]
fn bad_settings_are_refused_naming_the_flag() {
    let flag = |e: Error| match e {
        Error::Setting { name, .. } => name,
        other => panic!("{other}"),
    };
    assert_eq!(flag(Schedule::build(ScheduleKind::DualPipe, 3, 12).unwrap_err()), "--ranks");
    assert_eq!(flag(Schedule::build(ScheduleKind::DualPipe, 4, 6).unwrap_err()), "--micro-batches");
    assert_eq!(flag(Schedule::build(ScheduleKind::DualPipe, 4, 9).unwrap_err()), "--micro-batches");
    assert_eq!(flag(Schedule::build(ScheduleKind::DualPipeV, 4, 7).unwrap_err()), "--micro-batches");
    assert_eq!(flag(Schedule::build(ScheduleKind::OneFOneB, 0, 4).unwrap_err()), "--ranks");
    assert_eq!(flag(ChunkTimes::new(0.0, 2.0, 1.0).check().unwrap_err()), "--f");
    assert_eq!(flag(ChunkTimes::new(1.0, -2.0, 1.0).check().unwrap_err()), "--b");
    assert_eq!(flag(ChunkTimes::new(1.0, 2.0, 2.0).check().unwrap_err()), "--w");
    assert_eq!(flag(ChunkTimes::new(1.0, 2.0, 1.0).with_forward_backward(f64::NAN).check().unwrap_err()), "--fb");
}

#[test]
fn gantt_chart_is_written_as_svg_and_png() {
    use crate::plot::Figure;
    let (_, timeline, _) = run(ScheduleKind::DualPipe, 4, 8, ChunkTimes::new(1.0, 2.0, 1.0));
    let gantt = Gantt { title: "DualPipe, 4 ranks, 8 micro-batches".into(), timeline: &timeline };
    let svg = gantt.svg(900, 260).unwrap();
    assert!(svg.as_str().contains("Device 3") && svg.as_str().contains("Backward for weights"));
    let dir = tempfile::tempdir().unwrap();
    gantt.save(&dir.path().join("dualpipe"), 900, 260).unwrap();
    assert!(dir.path().join("dualpipe.png").metadata().unwrap().len() > 1000);
}

#[test]
fn dualpipe_for_figure_5_has_the_published_step_counts() {
    // 8 ranks, 20 micro-batches (Figure 5): n = 4, m = 10, h = 0, 1, 2, 3, 3, 2, 1, 0. From
    // the step table, by hand: lone F = 3(n−h−1) + 2(h+1) (+1 on the middle ranks), F&B =
    // 2(m−2n+h+1) + (n−h−1) (−1 there), lone full B = (n−h−1) + (h+1) (+1 there), inputs
    // only = W = 2(n−h−1) + (h+1): half of nB1B0's 2(h+1) backwards are inputs only.
    let expected_by_h = [(11, 9, 4, 7), (10, 10, 4, 6), (9, 11, 4, 5), (9, 11, 5, 4)];
    let schedule = Schedule::build(ScheduleKind::DualPipe, 8, 20).unwrap();
    for (rank, ops) in schedule.ops.iter().enumerate() {
        let count = |is: fn(&Op) -> bool| ops.iter().filter(|op| is(op)).count();
        let counts = (
            count(|op| matches!(op, Op::Forward { .. })),
            count(|op| matches!(op, Op::ForwardBackward { .. })),
            count(|op| matches!(op, Op::Backward { .. })),
            count(|op| matches!(op, Op::BackwardInput { .. })),
        );
        assert_eq!(counts, expected_by_h[rank.min(7 - rank)], "rank {rank}");
        assert_eq!(count(|op| matches!(op, Op::BackwardWeight { .. })), counts.3, "rank {rank}");
    }
}
