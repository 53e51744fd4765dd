//! `v3lab eplb --weights FILE --replicas R --groups G --nodes N --gpus P --out FILE`: the
//! redundant-expert placement of deepseek-ai/EPLB's `rebalance_experts` (DeepSeek-V3 §3.4;
//! `v3lab::eplb`). FILE holds an I64 `weight` [layers, experts] of measured expert loads;
//! the output holds I64 `phy2log` [layers, R], `log2phy` [layers, experts, most replicas]
//! (−1 padded) and `logcnt` [layers, experts], as EPLB returns them. Prints the policy used
//! and, per layer, the largest GPU load against the mean, before and after.
//!
//! `v3lab eplb --study RESULTS.json... --out DIR`: the same placement on the expert loads
//! that v3lab's own ablation runs measured (each run's `relative_load`, counted on its
//! validation sequences after training), for 2 to E GPUs and 0, 1, 2 or 4 redundant
//! experts per GPU; prints max/mean GPU load and writes `eplb-study.{svg,png,json}`. Besides
//! the placement fitted to the loads it serves, each validation domain's loads are placed
//! by the other domains' loads of the same layer: a placement chosen from other statistics.

use anyhow::Result;
use clap::Args;
use ndarray::{Array2, Ix2};
use serde_json::{json, Value};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use v3lab::eplb::{gpu_loads, index_order_gpu_loads, max_over_mean, rebalance_experts, Policy};
use v3lab::io::{check_output_file, refuse_output_over_input, write_safetensors, MappedFile, OutputDir, OwnedTensor};
use v3lab::lab::Table;
use v3lab::plot::{Figure, Lines, Panel, Scale, Series};
use v3lab::Error;

#[derive(Args)]
pub struct EplbArgs {
    /// Safetensors file with an I64 tensor `weight` [layers, experts]: the measured loads.
    #[arg(long, required_unless_present = "study")]
    pub weights: Option<PathBuf>,
    /// Physical experts (replicas) per layer, a multiple of --gpus and at least the experts.
    #[arg(long, required_unless_present = "study")]
    pub replicas: Option<usize>,
    /// Expert groups of the group-limited routing; with --nodes dividing them, the hierarchical policy.
    #[arg(long, required_unless_present = "study")]
    pub groups: Option<usize>,
    /// Server nodes.
    #[arg(long, required_unless_present = "study")]
    pub nodes: Option<usize>,
    /// GPUs, a multiple of --nodes.
    #[arg(long, required_unless_present = "study")]
    pub gpus: Option<usize>,
    /// The study instead: `results.json` files of the ablations (ablate-aux-free, ...), whose
    /// runs' measured expert loads are placed for several GPU counts and redundant experts.
    #[arg(long, num_args = 1.., conflicts_with_all = ["weights", "replicas", "groups", "nodes", "gpus"])]
    pub study: Vec<PathBuf>,
    /// Output: a safetensors file (`phy2log`, `log2phy`, `logcnt`); with --study, a folder.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: &EplbArgs) -> Result<()> {
    if !args.study.is_empty() {
        return study(&args.study, &args.out);
    }
    // clap requires each of these without --study.
    let (Some(weights), Some(replicas), Some(groups), Some(nodes), Some(gpus)) =
        (&args.weights, args.replicas, args.groups, args.nodes, args.gpus)
    else {
        return Err(
            Error::setting("--weights", "--weights, --replicas, --groups, --nodes and --gpus are needed").into()
        );
    };
    refuse_output_over_input("--out", &args.out, &[("--weights", weights)])?;
    check_output_file(&args.out)?;
    let weight = read_weight(weights)?;
    let placement = rebalance_experts(weight.view(), replicas, groups, nodes, gpus)?;
    write_safetensors(
        &args.out,
        &[
            OwnedTensor::i64("phy2log", placement.phy2log.view().into_dyn()),
            OwnedTensor::i64("log2phy", placement.log2phy.view().into_dyn()),
            OwnedTensor::i64("logcnt", placement.logcnt.view().into_dyn()),
        ],
    )?;
    let policy = match Policy::of(groups, nodes) {
        Policy::Hierarchical => "hierarchical (groups packed to nodes)",
        Policy::Global => "global (groups ignored)",
    };
    let mut table = Table::new(
        format!("policy: {policy}; {replicas} replicas on {gpus} GPUs of {nodes} nodes"),
        &["layer", "max/mean GPU load, experts in index order", "placed by EPLB"],
    );
    for (layer, row) in weight.rows().into_iter().enumerate() {
        let row = row.to_vec();
        let placed =
            gpu_loads(&row, &placement.phy2log.row(layer).to_vec(), &placement.logcnt.row(layer).to_vec(), gpus);
        let plain = index_order_gpu_loads(&row, gpus)
            .map_or("— (the GPUs do not divide the experts)".to_string(), |l| format!("{:.3}", max_over_mean(&l)));
        table.push([layer.to_string(), plain, format!("{:.3}", max_over_mean(&placed))]);
    }
    let _ = writeln!(std::io::stdout(), "{table}wrote {}", args.out.display());
    Ok(())
}

/// Reads `weight` [layers, experts] (I64), refusing negative loads.
fn read_weight(path: &Path) -> Result<Array2<i64>> {
    let weight = MappedFile::open(path)?.i64("weight")?;
    let shape = weight.shape().to_vec();
    let weight = weight
        .into_dimensionality::<Ix2>()
        .map_err(|_| Error::tensor(path, "weight", format!("shape {shape:?}, expected [layers, experts]")))?;
    if weight.is_empty() {
        return Err(Error::tensor(path, "weight", format!("is empty ({shape:?})")).into());
    }
    if let Some(((layer, expert), load)) = weight.indexed_iter().find(|(_, &w)| w < 0) {
        return Err(
            Error::tensor(path, "weight", format!("[{layer}, {expert}] is {load}: loads cannot be negative")).into()
        );
    }
    Ok(weight)
}

/// The measured loads of one group of runs (one variant of one study): every run's every
/// MoE layer, as token counts [layer × seed, experts], summed over the validation domains
/// (`layers`) and per domain (`by_domain`, [layer × seed][domain][expert]).
struct MeasuredLoads {
    label: String,
    layers: Vec<Vec<i64>>,
    by_domain: Vec<Vec<Vec<i64>>>,
}

/// Each domain's max/mean GPU load under the placement EPLB makes from the other domains'
/// loads of the same layer: the balance of a placement on loads it was not fitted to.
fn held_out(group: &MeasuredLoads, replicas: usize, gpus: usize) -> Result<Vec<f64>> {
    let mut imbalance = Vec::new();
    for domains in group.by_domain.iter().filter(|d| d.len() > 1) {
        let experts = domains[0].len();
        for (d, served) in domains.iter().enumerate() {
            let others: Vec<i64> = (0..experts)
                .map(|e| domains.iter().enumerate().filter(|&(o, _)| o != d).map(|(_, l)| l[e]).sum())
                .collect();
            let placement =
                rebalance_experts(Array2::from_shape_vec((1, experts), others)?.view(), replicas, 1, 1, gpus)?;
            let (phy2log, logcnt) = (placement.phy2log.row(0).to_vec(), placement.logcnt.row(0).to_vec());
            imbalance.push(max_over_mean(&gpu_loads(served, &phy2log, &logcnt, gpus)));
        }
    }
    Ok(imbalance)
}

/// Redundant experts per GPU in the study (the paper's prefill deployment has one: §3.4).
const REDUNDANT_PER_GPU: [usize; 4] = [0, 1, 2, 4];

fn study(files: &[PathBuf], out: &Path) -> Result<()> {
    let inputs: Vec<(&str, &Path)> = files.iter().map(|f| ("--study", f.as_path())).collect();
    refuse_output_over_input("--out", out, &inputs)?;
    let _out = OutputDir::lock(out)?;
    let mut groups: Vec<MeasuredLoads> = Vec::new();
    for file in files {
        for loads in read_results(file, files.len() > 1)? {
            match groups.iter_mut().find(|g| g.label == loads.label) {
                Some(g) => {
                    g.layers.extend(loads.layers);
                    g.by_domain.extend(loads.by_domain);
                }
                None => groups.push(loads),
            }
        }
    }
    let experts = groups[0].layers[0].len();
    if let Some(g) = groups.iter().find(|g| g.layers.iter().any(|l| l.len() != experts)) {
        return Err(Error::setting("--study", format!("{}: not {experts} experts like the others", g.label)).into());
    }
    let gpu_counts: Vec<usize> = (1..).map(|i| 1 << i).take_while(|&p| p <= experts).collect();
    let mut header = vec!["runs".to_string(), "GPUs".to_string(), "index order".to_string()];
    header.extend(REDUNDANT_PER_GPU.map(|k| format!("{k} redundant per GPU")));
    header.push("one domain's loads: index order".to_string());
    header.push("one domain's loads, 1 per GPU placed by the other domains' loads".to_string());
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut table = Table::new(
        format!(
            "max/mean GPU load, mean (worst) over layers and seeds; {experts} experts, EPLB's global policy; \
             redundant experts = GPUs × per GPU"
        ),
        &header,
    );
    let mut panels: Vec<Panel> = gpu_counts
        .iter()
        .map(|p| Panel {
            title: format!("{p} GPUs"),
            x_label: "redundant experts".into(),
            y_label: "max / mean GPU load".into(),
            series: Vec::new(),
        })
        .collect();
    let mut records = Vec::new();
    for group in &groups {
        let weight = Array2::from_shape_vec((group.layers.len(), experts), group.layers.concat())?;
        for (panel, &gpus) in panels.iter_mut().zip(&gpu_counts) {
            let index_order: Vec<f64> = group
                .layers
                .iter()
                .filter_map(|row| index_order_gpu_loads(row, gpus).map(|l| max_over_mean(&l)))
                .collect();
            let mut cells = vec![group.label.clone(), gpus.to_string(), mean_and_worst(&index_order)];
            let mut points = Vec::new();
            let mut held_out_cell = "—".to_string();
            for per_gpu in REDUNDANT_PER_GPU {
                let redundant = per_gpu * gpus;
                let replicas = experts + redundant;
                if !replicas.is_multiple_of(gpus) {
                    cells.push("—".into());
                    continue;
                }
                let placement = rebalance_experts(weight.view(), replicas, 1, 1, gpus)?;
                let imbalance: Vec<f64> = (0..group.layers.len())
                    .map(|l| {
                        let phy2log = placement.phy2log.row(l).to_vec();
                        max_over_mean(&gpu_loads(&group.layers[l], &phy2log, &placement.logcnt.row(l).to_vec(), gpus))
                    })
                    .collect();
                cells.push(mean_and_worst(&imbalance));
                points.push((redundant as f64, mean(&imbalance)));
                let held_out = held_out(group, replicas, gpus)?;
                if per_gpu == 1 {
                    held_out_cell = mean_and_worst(&held_out);
                }
                records.push(json!({
                    "runs": group.label, "gpus": gpus, "redundant": redundant, "replicas": replicas,
                    "max_over_mean": imbalance, "index_order": index_order, "held_out_by_domain": held_out,
                }));
            }
            let domain_index_order: Vec<f64> = (group.by_domain.iter().filter(|d| d.len() > 1).flatten())
                .filter_map(|row| index_order_gpu_loads(row, gpus).map(|l| max_over_mean(&l)))
                .collect();
            cells.push(mean_and_worst(&domain_index_order));
            cells.push(held_out_cell);
            panel.series.push(Series::line(&group.label, points));
            table.push(cells);
        }
    }
    std::fs::create_dir_all(out).map_err(|e| Error::file(out, e))?;
    let stem = out.join("eplb-study");
    let figure = Lines { panels, scale: Scale::Linear };
    figure.save(&stem, 420 * gpu_counts.len() as u32, 420)?;
    let document = serde_json::to_vec_pretty(&json!({
        "sources": files, "experts": experts, "policy": "global", "points": records,
    }))?;
    v3lab::io::write_atomically(&stem.with_extension("json"), |f| f.write_all(&document))?;
    let _ = writeln!(
        std::io::stdout(),
        "{table}Loads: each run's routed-token counts per expert on its validation sequences after training, \
         one row per MoE layer. Each placement is EPLB's for that layer's own loads, so this is the balance \
         when the placement is fitted to the loads it serves (the paper re-chooses it from statistics, \
         e.g. every 10 minutes: §3.4); the last two columns take each domain's loads alone, in index order and \
         placed by the other domains' loads of the same layer (a placement not fitted to them).\nwrote {}.svg, .png and .json",
        stem.display()
    );
    Ok(())
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

fn mean_and_worst(values: &[f64]) -> String {
    if values.is_empty() {
        return "—".into();
    }
    format!("{:.3} ({:.3})", mean(values), values.iter().copied().fold(0.0, f64::max))
}

/// The routed-token counts per expert of every run in an ablation's `results.json`, grouped
/// by variant. `relative_load` is count / (routed / experts) per domain, routed being the
/// domain's validation positions × top-k; its counts are summed over the domains.
fn read_results(path: &Path, prefix_study: bool) -> Result<Vec<MeasuredLoads>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, e))?;
    let doc: Value = serde_json::from_str(&text).map_err(|e| Error::file(path, format!("not JSON: {e}")))?;
    let field = |v: &Value, name: &str| -> Result<u64> {
        v.as_u64()
            .filter(|&n| n > 0)
            .ok_or_else(|| Error::config(name, format!("in {}: a positive integer", path.display())).into())
    };
    let seq_len = field(&doc["preset"]["seq_len"], "preset.seq_len")? as f64;
    let top_k = field(&doc["preset"]["model"]["n_activated_experts"], "preset.model.n_activated_experts")? as f64;
    let experts = field(&doc["preset"]["model"]["n_routed_experts"], "preset.model.n_routed_experts")? as usize;
    let study = doc["study"].as_str().unwrap_or("study");
    let runs =
        doc["runs"].as_array().ok_or_else(|| Error::config("runs", format!("in {}: missing", path.display())))?;
    let mut groups: Vec<MeasuredLoads> = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        let variant = run["variant"].as_str().unwrap_or("run");
        let label = if prefix_study { format!("{study}/{variant}") } else { variant.to_string() };
        let domains = run["domains"]
            .as_object()
            .ok_or_else(|| Error::config(format!("runs[{i}].domains"), format!("in {}: missing", path.display())))?;
        // [layer][domain][expert]
        let mut layers: Vec<Vec<Vec<i64>>> = Vec::new();
        for (d, (name, domain)) in domains.iter().enumerate() {
            let at = format!("runs[{i}].domains.{name}");
            let tokens = field(&domain["tokens"], &format!("{at}.tokens"))? as f64;
            // `tokens` counts next-token targets: seq_len − 1 per validation sequence.
            let per_expert = tokens / (seq_len - 1.0) * seq_len * top_k / experts as f64;
            let relative = domain["relative_load"].as_array().map(Vec::as_slice).unwrap_or(&[]);
            if relative.is_empty() {
                return Err(
                    Error::config(format!("{at}.relative_load"), format!("in {}: missing", path.display())).into()
                );
            }
            for (l, row) in relative.iter().enumerate() {
                let row = row.as_array().map(Vec::as_slice).unwrap_or(&[]);
                if row.len() != experts {
                    return Err(Error::config(
                        format!("{at}.relative_load[{l}]"),
                        format!("in {}: {} values, expected {experts} experts", path.display(), row.len()),
                    )
                    .into());
                }
                if layers.len() <= l {
                    layers.push(Vec::new());
                }
                layers[l].resize(d + 1, vec![0; experts]);
                for (e, value) in row.iter().enumerate() {
                    let count = value.as_f64().unwrap_or(f64::NAN) * per_expert;
                    // Counts come back whole; anything else is not the layout read here.
                    if !(count >= -1e-6 && (count - count.round()).abs() < 1e-6 * count.max(1.0)) {
                        return Err(Error::config(
                            format!("{at}.relative_load[{l}][{e}]"),
                            format!("in {}: {value} is not a routed-token count / {per_expert}", path.display()),
                        )
                        .into());
                    }
                    layers[l][d][e] = count.round() as i64;
                }
            }
        }
        // A domain that lacks a layer leaves zeros there.
        let summed: Vec<Vec<i64>> =
            layers.iter().map(|ds| (0..experts).map(|e| ds.iter().map(|l| l[e]).sum()).collect()).collect();
        match groups.iter_mut().find(|g| g.label == label) {
            Some(g) => {
                g.layers.extend(summed);
                g.by_domain.extend(layers);
            }
            None => groups.push(MeasuredLoads { label, layers: summed, by_domain: layers }),
        }
    }
    if groups.is_empty() {
        return Err(Error::config("runs", format!("in {}: no runs", path.display())).into());
    }
    Ok(groups)
}
