//! `ablate-aux-free` (DeepSeek-V3 §4.5.2, Table 5; Wang et al. 2024, Table 2): balancing by
//! a sequence-wise auxiliary loss (two values of α) against auxiliary-loss-free balancing
//! (the selection bias, γ = 0.001, no loss) and no balancing at all.

use super::balancing as variant;
use crate::figures::{expert_load, loss_curves, max_vio_curves};
use crate::report::{compare_variants, domain_mean, per_domain_table, table, Column};
use crate::run::RunResult;
use crate::study::Study;
use v3lab_reference::balance::AuxLoss;

pub fn study() -> Study {
    Study {
        name: "ablate-aux-free",
        title: "Auxiliary-loss-free load balancing (DeepSeek-V3 §4.5.2; Wang et al. 2024)",
        variants: vec![
            variant("aux-loss-1e-2", 0.0, AuxLoss::Sequence, 1e-2),
            variant("aux-loss-1e-3", 0.0, AuxLoss::Sequence, 1e-3),
            variant("aux-free", 0.001, AuxLoss::None, 0.0),
            variant("no-balance", 0.0, AuxLoss::None, 0.0),
        ],
        paper: PAPER,
        analyse,
        figures: |out, results, names| {
            Ok(vec![
                loss_curves(out, results, names)?,
                max_vio_curves(out, results, names)?,
                expert_load(out, results, names)?,
            ])
        },
        match_balance: None,
    }
}

const PAPER: &str = "DeepSeek-V3 Table 5 (aux-loss-based vs aux-loss-free, sigmoid gating): Pile-test BPB 0.727 vs \
0.724 (small, 15.7B) and 0.656 vs 0.652 (large, 228.7B).\n\n\
Wang et al. 2024, Table 2 (baseline α = 0.001, bias update u = 0.001):\n\n\
| Model | Method | Validation perplexity | MaxVio_global |\n|---|---|---:|---:|\n\
| 1B | Loss-Controlled | 9.56 | 0.72 |\n| 1B | Loss-Free | 9.50 | 0.04 |\n\
| 3B | Loss-Controlled | 7.97 | 0.52 |\n| 3B | Loss-Free | 7.92 | 0.04 |\n\n\
Figure 2 of Wang et al.: a small α gives routing collapse, a large α hurts perplexity.";

fn analyse(results: &[RunResult], names: &[String]) -> String {
    let mut s = String::from("### Validation loss (nats per token)\n\n");
    s += &per_domain_table(results, names, |d| d.loss, 4);
    s += "\n### Balance\n\n";
    let columns: [Column; 2] = [
        ("MaxVio_global (validation)", 3, &|r| Some(r.max_vio_global)),
        ("MaxVio_batch (last 10% of steps)", 3, &|r| Some(last_tenth_max_vio(r))),
    ];
    s += &table(results, names, &columns);
    let loss = |r: &RunResult| Some(domain_mean(r, |d| d.loss));
    let vio = |r: &RunResult| Some(r.max_vio_global);
    s += "\n### Reading\n\n";
    for line in [
        compare_variants("Validation loss", results, "aux-free", "aux-loss-1e-3", &loss),
        compare_variants("MaxVio_global", results, "aux-free", "aux-loss-1e-3", &vio),
        compare_variants("MaxVio_global", results, "aux-free", "no-balance", &vio),
        compare_variants("MaxVio_global", results, "aux-loss-1e-2", "no-balance", &vio),
    ] {
        s += &format!("- {line}\n");
    }
    s
}

/// MaxVio_batch averaged over the last tenth of training (Wang et al. average 100 steps).
pub fn last_tenth_max_vio(r: &RunResult) -> f64 {
    let tail = &r.curve[r.curve.len() - (r.curve.len() / 10).max(1)..];
    tail.iter().map(|p| p.max_vio_batch).sum::<f64>() / tail.len() as f64
}
