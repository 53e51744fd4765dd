//! `v3lab`: run, inspect and re-measure the ideas of the DeepSeek-V3 technical report.
//! Each subcommand lives in `src/cmd/<name>.rs`; every failure exits non-zero with a
//! message that names the file, tensor or field at fault.

mod cmd;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "v3lab", version, about = "DeepSeek-V3, runnable and measurable at small scale")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Logits of every position for a batch of tokens.
    Logits(cmd::logits::LogitsArgs),
    /// Generate text (or ids) from a prompt: absorbed-cache decoding, sampling, MTP speculative decoding.
    Generate(cmd::generate::GenerateArgs),
    /// Configuration, parameter counts and cache sizes of a checkpoint.
    Inspect(cmd::inspect::InspectArgs),
    /// Train a model (AdamW, MTP, balancing) on a fixed batch or a text corpus.
    Train(cmd::train::TrainArgs),
    /// FP8 simulation: scaled GEMM with a simulated accumulator, and the FP8 study.
    Fp8(cmd::fp8::Fp8Args),
    /// Redundant experts placed on GPUs as deepseek-ai/EPLB places them (hierarchical or global policy).
    Eplb(cmd::eplb::EplbArgs),
    /// Pipeline schedules (1F1B, ZB1P, DualPipe, DualPipeV) simulated: bubbles, memory, Gantt charts, Table 2.
    Pipeline(cmd::pipeline::PipelineArgs),
    /// Deployment arithmetic (§3.2.2, §3.4): weights, KV cache and all-to-all per GPU of the prefill and decode units.
    Plan(cmd::plan::PlanArgs),
}

fn main() -> std::process::ExitCode {
    v3lab::backend::tune_allocator();
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Logits(args) => cmd::logits::run(args),
        Command::Generate(args) => cmd::generate::run(args),
        Command::Inspect(args) => cmd::inspect::run(args),
        Command::Train(args) => cmd::train::run(args),
        Command::Fp8(args) => cmd::fp8::run(args),
        Command::Pipeline(args) => cmd::pipeline::run(args),
        Command::Eplb(args) => cmd::eplb::run(args),
        Command::Plan(args) => cmd::plan::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
