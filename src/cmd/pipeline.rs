//! `v3lab pipeline --schedule 1f1b|zb1p|dualpipe|dualpipev --ranks P --micro-batches M
//! --f F --b B --w W [--fb FB] [--comm C] [--json] [--out DIR]`: simulates one pipeline
//! schedule (DeepSeek-V3 §3.2.1, Table 2; `v3lab::pipeline`) and prints per rank the busy
//! time, the bubble, the peak of activations held and the stages held, with Table 2's
//! formulas beside the simulated values. `--out DIR` writes `<schedule>.svg` / `.png` (a
//! Gantt chart in the style of Figure 5) and `<schedule>.json` (the report and the timeline).

use anyhow::Result;
use clap::Args;
use serde_json::json;
use std::io::Write as _;
use std::path::PathBuf;
use v3lab::lab::Table;
use v3lab::pipeline::{simulate, ChunkTimes, Gantt, Report, Schedule, ScheduleKind};
use v3lab::plot::Figure;
use v3lab::Error;

#[derive(Args)]
pub struct PipelineArgs {
    /// 1f1b, zb1p (zero bubble, ZB-H1), dualpipe or dualpipev.
    #[arg(long)]
    pub schedule: String,
    /// Pipeline ranks P (even for dualpipe; dualpipev runs 2P stages on them).
    #[arg(long)]
    pub ranks: usize,
    /// Micro-batches M (both directions together for dualpipe; at least 2P for dualpipe and dualpipev).
    #[arg(long)]
    pub micro_batches: usize,
    /// F: time of a forward chunk.
    #[arg(long)]
    pub f: f64,
    /// B: time of a full backward chunk.
    #[arg(long)]
    pub b: f64,
    /// W: time of a backward for weights (less than B; the backward for inputs takes B - W).
    #[arg(long)]
    pub w: f64,
    /// F&B: time of a forward and a backward chunk overlapped; F + B when absent.
    #[arg(long)]
    pub fb: Option<f64>,
    /// Time of a transfer between ranks, added to every wait on another rank (0 in Table 2).
    #[arg(long, default_value_t = 0.0)]
    pub comm: f64,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Write the Gantt chart (SVG, PNG) and the JSON report with the timeline here.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run(args: &PipelineArgs) -> Result<()> {
    let kind = ScheduleKind::parse(&args.schedule).ok_or_else(|| {
        Error::setting("--schedule", format!("unknown schedule `{}`: 1f1b, zb1p, dualpipe or dualpipev", args.schedule))
    })?;
    let times = ChunkTimes {
        forward_backward: args.fb.unwrap_or(args.f + args.b),
        comm: args.comm,
        ..ChunkTimes::new(args.f, args.b, args.w)
    };
    times.check()?;
    let schedule = Schedule::build(kind, args.ranks, args.micro_batches)?;
    let timeline = simulate(&schedule, &times)?;
    let report = timeline.report(&schedule);
    if let Some(dir) = &args.out {
        let _out = v3lab::io::OutputDir::lock(dir)?;
        let stem = dir.join(kind.name());
        let title = format!("{}: {} ranks, {} micro-batches", kind.name(), args.ranks, args.micro_batches);
        let width = (40.0 * timeline.makespan() / times.forward.min(times.weight)).clamp(900.0, 4000.0) as u32;
        Gantt { title, timeline: &timeline }.save(&stem, width, 90 + 40 * args.ranks as u32)?;
        let document = serde_json::to_vec_pretty(&json!({ "report": report, "timeline": timeline }))?;
        v3lab::io::write_atomically(&stem.with_extension("json"), |f| f.write_all(&document))?;
    }
    let text = if args.json { serde_json::to_string_pretty(&report)? + "\n" } else { render(&report) };
    // A closed pipe (`| head`) is not an error worth a message.
    let _ = std::io::stdout().write_all(text.as_bytes());
    Ok(())
}

fn render(r: &Report) -> String {
    let t = &r.times;
    let mut ranks = Table::new(
        format!(
            "{} on {} ranks, {} micro-batches (F {}, B {}, W {}, F&B {}, comm {}): makespan {}",
            r.schedule.name(),
            r.ranks,
            r.micro_batches,
            t.forward,
            t.backward,
            t.weight,
            t.forward_backward,
            t.comm,
            r.makespan
        ),
        &["rank", "busy", "bubble", "peak activations", "stages held"],
    );
    for (i, rank) in r.per_rank.iter().enumerate() {
        ranks.push([
            i.to_string(),
            rank.busy.to_string(),
            rank.bubble.to_string(),
            rank.peak_activations.to_string(),
            rank.stages_held.to_string(),
        ]);
    }
    let stages_held = r.per_rank.iter().map(|rank| rank.stages_held).max().unwrap_or(0);
    let exact = if r.table2_exact { "yes" } else { "no (see v3lab::pipeline::table2)" };
    let table2 = Table::new("Table 2 against the simulation (largest rank)", &["", "simulated", "Table 2"])
        .row(["bubble".to_string(), r.bubble.to_string(), r.table2_bubble.to_string()])
        .row(["activations".to_string(), r.peak_activations.to_string(), r.table2_activations.to_string()])
        .row([
            "parameters (stages per rank)".to_string(),
            stages_held.to_string(),
            format!("{}x", r.table2_parameter_factor),
        ])
        .row(["formula exact under these settings".to_string(), String::new(), exact.to_string()]);
    format!("{ranks}\n{table2}")
}
