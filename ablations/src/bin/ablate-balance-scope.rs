//! `cargo run --release --bin ablate-balance-scope -- [--preset smoke|small|medium|full] [--seeds N] [--out DIR] [--corpus PATH]`

fn main() -> std::process::ExitCode {
    v3lab_ablations::study::main(v3lab_ablations::studies::balance_scope::study())
}
