//! `ablate-balance-scope` (DeepSeek-V3 §4.5.3, Figure 9): the balancing scope, sequence-wise
//! auxiliary loss vs batch-wise auxiliary loss vs auxiliary-loss-free, and what it does to
//! expert specialisation per domain.

use super::balancing as variant;
use crate::figures::{expert_load, loss_curves, max_vio_curves};
use crate::matching::MatchBalance;
use crate::report::{compare_variants, domain_mean, per_domain_table, stat, table, Column};
use crate::run::RunResult;
use crate::study::Study;
use v3lab_reference::balance::AuxLoss;

/// Where the search for matched balance starts; with `--match-probes 0`, the one α of both
/// loss scopes, so that they differ only in scope.
const ALPHA: f32 = 1e-3;

pub fn study() -> Study {
    Study {
        name: "ablate-balance-scope",
        title: "Batch-wise vs sequence-wise load balance (DeepSeek-V3 §4.5.3)",
        variants: vec![
            variant("sequence-wise", 0.0, AuxLoss::Sequence, ALPHA),
            variant("batch-wise", 0.0, AuxLoss::Batch, ALPHA),
            variant("aux-free", 0.001, AuxLoss::None, 0.0),
        ],
        paper: PAPER,
        analyse,
        figures: |out, results, names| {
            Ok(vec![
                expert_load(out, results, names)?,
                loss_curves(out, results, names)?,
                max_vio_curves(out, results, names)?,
            ])
        },
        match_balance: Some(MatchBalance { target: "aux-free", tuned: vec!["sequence-wise", "batch-wise"] }),
    }
}

const PAPER: &str = "§4.5.3, validation losses:\n\n\
| Model | Sequence-wise aux loss | Aux-loss-free | Batch-wise aux loss |\n|---|---:|---:|---:|\n\
| 1B MoE | 2.258 | 2.253 | 2.253 |\n| 3B MoE | 2.085 | 2.080 | 2.080 |\n\n\
Batch-wise balancing \"does not enforce in-domain balance on each sequence. This flexibility allows experts to better \
specialize in different domains.\" Figure 9: \"The auxiliary-loss-free model shows greater expert specialization patterns \
than the auxiliary-loss-based one\" (relative expert load on Wikipedia, Github and DM Mathematics; per-expert numbers \
are not published).";

fn analyse(results: &[RunResult], names: &[String]) -> String {
    let mut s = String::from("### Validation loss (nats per token)\n\n");
    s += &per_domain_table(results, names, |d| d.loss, 4);
    s += "\n### Balance and specialisation\n\n";
    let columns: [Column; 2] = [
        ("MaxVio_global", 3, &|r| Some(r.max_vio_global)),
        ("specialisation I(domain; expert), bits", 4, &|r| Some(r.specialisation_bits)),
    ];
    s += &table(results, names, &columns);
    s += "\nThe relative expert load per domain (actual / balanced, the paper's Figure 9) is in `expert-load.png`.\n";
    let loss = |r: &RunResult| Some(domain_mean(r, |d| d.loss));
    let spec = |r: &RunResult| Some(r.specialisation_bits);
    s += "\n### Reading\n\n";
    for aux in ["sequence-wise", "batch-wise"] {
        s += &format!("- {}\n", balance_match(results, aux, "aux-free"));
    }
    for line in [
        compare_variants("Validation loss", results, "batch-wise", "sequence-wise", &loss),
        compare_variants("Validation loss", results, "aux-free", "sequence-wise", &loss),
        compare_variants(
            "Specialisation (bits; the paper expects more without per-sequence balance)",
            results,
            "sequence-wise",
            "batch-wise",
            &spec,
        ),
        compare_variants("Specialisation (bits)", results, "sequence-wise", "aux-free", &spec),
    ] {
        s += &format!("- {line}\n");
    }
    s
}

/// Whether two variants ran at the same degree of balance, which the comparisons of loss
/// and specialisation assume.
fn balance_match(results: &[RunResult], a: &str, b: &str) -> String {
    let vio = |r: &RunResult| Some(r.max_vio_global);
    let (Some(x), Some(y)) = (stat(results, a, vio), stat(results, b, vio)) else {
        return format!("Balance: MaxVio_global not measured for {a} or {b}.");
    };
    let (diff, noise) = x.minus(&y);
    let verdict = if x.n < 2 {
        "one seed only, so matching cannot be judged"
    } else if diff.abs() <= 2.0 * noise {
        "matched (within two standard deviations of the seed noise)"
    } else {
        "not matched, so the comparisons below mix the balancing scope with the degree of balance"
    };
    format!(
        "Balance: {a} MaxVio_global {:.3} vs {b} {:.3} (difference {diff:+.3}, seed noise {noise:.3}): {verdict}.",
        x.mean, y.mean
    )
}
