//! Prints the default corpus summary: `cargo run --release -p v3lab-ablations --example corpus_summary -- [MB per domain]`.
use v3lab_ablations::corpus::{Corpus, CorpusSpec};

fn main() -> anyhow::Result<()> {
    let mb: f64 = std::env::args().nth(1).map(|a| a.parse()).transpose()?.unwrap_or(4.0);
    let spec = CorpusSpec { seed: 0, bytes_per_domain: (mb * 1e6) as usize, validation_percent: 5 };
    let start = std::time::Instant::now();
    let corpus = Corpus::assemble(&spec)?;
    print!("{}", corpus.summary_table());
    println!("assembled in {:.1} s", start.elapsed().as_secs_f64());
    let sample = corpus.train.iter().find(|d| d.key.starts_with("rust-docs")).or(corpus.train.first()).unwrap();
    println!("--- {} ---\n{}", sample.key, &sample.text[..sample.text.len().min(400)]);
    Ok(())
}
