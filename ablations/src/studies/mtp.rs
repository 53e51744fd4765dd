//! `ablate-mtp` (DeepSeek-V3 §4.5.1, Table 4): the same model with and without a depth-1
//! MTP module (λ = 0.3, then 0.1 for the last third, §4.2); the module is dropped for
//! evaluation, so both are evaluated as the same architecture. With the trained module:
//! its draft's acceptance rate in greedy speculative decoding (§5.4.3).

use super::V3_BALANCE;
use crate::figures::{loss_curves, max_vio_curves};
use crate::report::{compare_variants, domain_mean, per_domain_table, table, Column};
use crate::run::{RunResult, Variant};
use crate::study::Study;

pub fn study() -> Study {
    Study {
        name: "ablate-mtp",
        title: "Multi-token prediction (DeepSeek-V3 §4.5.1)",
        variants: vec![
            Variant::f32("baseline", 0, vec![(0.0, 0.0)], V3_BALANCE),
            Variant::f32("mtp", 1, vec![(0.0, 0.3), (2.0 / 3.0, 0.1)], V3_BALANCE),
        ],
        paper: PAPER,
        analyse,
        figures: |out, results, names| {
            Ok(vec![loss_curves(out, results, names)?, max_vio_curves(out, results, names)?])
        },
        match_balance: None,
    }
}

const PAPER: &str = "Table 4 (small MoE: 15.7B total, 2.4B activated, 1.33T tokens; large MoE: 228.7B, 20.9B, 540B \
tokens), a 1-depth MTP module appended, discarded at inference:\n\n\
| | Small baseline | Small w/ MTP | Large baseline | Large w/ MTP |\n|---|---:|---:|---:|---:|\n\
| Pile-test (BPB) | 0.729 | 0.729 | 0.658 | 0.657 |\n| HumanEval (Pass@1) | 20.7 | 26.8 | 44.5 | 53.7 |\n\
| GSM8K (EM) | 25.4 | 31.4 | 72.3 | 74.0 |\n\n\
\"The MTP strategy consistently enhances the model performance on most of the evaluation benchmarks\" (language-model \
BPB is unchanged or 0.001 better). §5.4.3: \"the acceptance rate of the second token prediction ranges between 85% and \
90%\", giving \"1.8 times TPS\".";

fn analyse(results: &[RunResult], names: &[String]) -> String {
    let mut s = String::from("### Validation loss of the main model (nats per token)\n\n");
    s += &per_domain_table(results, names, |d| d.loss, 4);
    s += "\n### Validation bits per byte\n\n";
    s += &per_domain_table(results, names, |d| d.bits_per_byte, 4);
    s += "\n### Speculative decoding with the trained MTP module (greedy)\n\n";
    let columns: [Column; 4] = [
        ("acceptance", 3, &|r| r.speculative.as_ref().map(|x| x.acceptance)),
        ("tokens per main step", 3, &|r| r.speculative.as_ref().map(|x| x.tokens_per_step)),
        ("repeat-last-token draft", 3, &|r| r.speculative.as_ref().map(|x| x.repeat_baseline)),
        ("chance (1/V)", 4, &|r| r.speculative.as_ref().map(|x| x.chance)),
    ];
    s += &table(results, &names[1..], &columns);
    s += "\n### Reading\n\n";
    s += &format!(
        "- {}\n",
        compare_variants("Mean validation bits per byte", results, "mtp", "baseline", &|r| Some(
            domain_mean(r, |d| d.bits_per_byte)
        ))
    );
    let spec_stat = |f: fn(&crate::run::Speculative) -> f64| {
        crate::report::stat(results, "mtp", move |r: &RunResult| r.speculative.as_ref().map(f))
    };
    if let (Some(acc), Some(per_step), Some(repeat), Some(chance)) = (
        spec_stat(|x| x.acceptance),
        spec_stat(|x| x.tokens_per_step),
        spec_stat(|x| x.repeat_baseline),
        spec_stat(|x| x.chance),
    ) {
        let against = if acc.mean >= 0.85 {
            "within or above the paper's range"
        } else if acc.mean + 2.0 * acc.std >= 0.85 {
            "below the paper's range, though within two standard deviations of it"
        } else {
            "below the paper's range"
        };
        s += &format!(
            "- Acceptance of the MTP draft: {:.1}% ± {:.1}%, {against} (85–90% for DeepSeek-V3, §5.4.3); {:.2} tokens \
             per main-model step (the paper: 1.8× tokens per second). Greedy continuations of a small model often fall \
             into loops that are easy to draft, so this rate measures the module on the model's own output, not on \
             fresh text; the floors it must beat are a repeat-last-token draft ({:.1}%) and chance ({:.2}%).\n",
            100.0 * acc.mean,
            100.0 * acc.std,
            per_step.mean,
            100.0 * repeat.mean,
            100.0 * chance.mean,
        );
    }
    s
}
