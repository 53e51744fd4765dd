//! `cargo run --release --bin ablate-fp8 -- [--preset smoke|small|medium|full] [--seeds N] [--out DIR] [--corpus PATH]`

fn main() -> std::process::ExitCode {
    v3lab_ablations::study::main(v3lab_ablations::studies::fp8::study())
}
