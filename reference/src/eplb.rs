//! Redundant experts placed on GPUs (DeepSeek-V3 §3.4: "we introduce a deployment strategy of
//! redundant experts, which duplicates high-load experts and deploys them redundantly"), as
//! deepseek-ai/EPLB's `rebalance_experts` places them (commit d52c72d), written from its
//! README and held to its outputs (`reference/tests/eplb.rs`).
//!
//! | EPLB | here |
//! |---|---|
//! | `rebalance_experts(weight, num_replicas, num_groups, num_nodes, num_gpus)` | [`rebalance_experts`] → [`Placement`] |
//! | hierarchical policy (`num_groups % num_nodes == 0`) / global policy (otherwise) | [`Policy::of`] |
//! | `rebalance_experts_hierarchical`: groups to nodes, replicas within nodes, replicas to GPUs | [`place_layer`] |
//! | `balanced_packing`: heaviest first into the lightest pack that is not full | [`balanced_packing`] |
//! | `replicate_experts`: each extra replica to the largest load per replica | [`replicate_experts`] |
//! | per-GPU load (the README's figure) | [`gpu_loads`] |
//! | max/mean GPU load, and the index-order placement without EPLB to compare with | [`max_over_mean`], [`index_order_gpu_loads`] |
//!
//! The global policy is the hierarchical one with one group on one node: the groups only
//! choose the policy then, and need not divide the experts.
//!
//! **Same ties, same order.** EPLB computes in f32 (`weight.float()`), so the loads here are
//! f32 too, converted, summed and divided as torch does. Its sort (`Tensor.sort`,
//! descending, not stable) is libstdc++'s `std::sort` on the CPU: an introsort whose order of
//! equal loads is not their index order once a row has more than 16 items. [`descending_order`]
//! is that algorithm, step for step, so equal loads land where EPLB puts them. Two limits:
//! a group's load is the f32 sum of its experts in index order, which is torch's only while
//! the sums are exact in f32 (integers below 2^24); and the introsort's heap-sort fallback
//! (after 2 log₂ n unbalanced partitions, which median-of-three pivots do not meet on load
//! statistics) is replaced by finishing the partitioning, which orders equal loads the same
//! way only as far as that fallback would.

use crate::error::{Error, Result};
use ndarray::{Array2, Array3, ArrayView2};

/// The physical experts of every layer and where the replicas of each logical one are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// [layers, replicas]: the logical expert in each physical slot; slot s is on GPU
    /// s / (replicas / gpus).
    pub phy2log: Array2<i64>,
    /// [layers, experts, most replicas of any expert]: the slots of each logical expert, in
    /// replica order, −1 beyond its count.
    pub log2phy: Array3<i64>,
    /// [layers, experts]: replicas of each logical expert.
    pub logcnt: Array2<i64>,
}

/// EPLB's two policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Groups packed onto nodes, then replicas within each node ("can be used in prefilling
    /// stage with a smaller expert-parallel size").
    Hierarchical,
    /// Replicas placed regardless of groups ("decoding stage with a larger expert-parallel size").
    Global,
}

impl Policy {
    /// Hierarchical when the groups divide evenly among the nodes, as EPLB chooses.
    pub fn of(groups: usize, nodes: usize) -> Policy {
        if groups.is_multiple_of(nodes) {
            Policy::Hierarchical
        } else {
            Policy::Global
        }
    }
}

/// Places `replicas` physical experts for the measured loads `weight` [layers, experts] on
/// `gpus` GPUs of `nodes` nodes, with the experts in `groups` groups (DeepSeek-V3's
/// group-limited routing). Refuses what EPLB asserts against, naming the CLI's flag.
pub fn rebalance_experts(
    weight: ArrayView2<'_, i64>,
    replicas: usize,
    groups: usize,
    nodes: usize,
    gpus: usize,
) -> Result<Placement> {
    let (layers, experts) = weight.dim();
    if layers == 0 || experts == 0 {
        return Err(Error::Input(format!("`weight` is [{layers}, {experts}]: no layer or no expert to place")));
    }
    for (flag, value) in [("--replicas", replicas), ("--groups", groups), ("--nodes", nodes), ("--gpus", gpus)] {
        if value == 0 {
            return Err(Error::setting(flag, "must be at least 1"));
        }
    }
    if !gpus.is_multiple_of(nodes) {
        return Err(Error::setting("--gpus", format!("{gpus} GPUs do not divide among {nodes} nodes")));
    }
    if !replicas.is_multiple_of(gpus) {
        return Err(Error::setting("--replicas", format!("{replicas} replicas do not divide among {gpus} GPUs")));
    }
    if replicas < experts {
        return Err(Error::setting("--replicas", format!("{replicas} replicas cannot hold {experts} experts")));
    }
    if let Some(((layer, expert), load)) = weight.indexed_iter().find(|(_, &w)| w < 0) {
        return Err(Error::Input(format!("`weight`[{layer}, {expert}] is {load}: a load cannot be negative")));
    }
    let (groups, nodes) = match Policy::of(groups, nodes) {
        Policy::Hierarchical => {
            if !experts.is_multiple_of(groups) {
                return Err(Error::setting(
                    "--groups",
                    format!("{experts} experts do not divide into {groups} groups"),
                ));
            }
            (groups, nodes)
        }
        Policy::Global => (1, 1),
    };
    let mut phy2log = Array2::zeros((layers, replicas));
    let mut phy_rank = Array2::zeros((layers, replicas));
    let mut logcnt = Array2::zeros((layers, experts));
    for (layer, row) in weight.rows().into_iter().enumerate() {
        // As `weight.float()`: each load rounded to the nearest f32.
        let loads: Vec<f32> = row.iter().map(|&w| w as f32).collect();
        let placed = place_layer(&loads, replicas, groups, nodes, gpus);
        for slot in 0..replicas {
            phy2log[[layer, slot]] = placed.expert[slot] as i64;
            phy_rank[[layer, slot]] = placed.replica[slot];
        }
        for (e, &count) in placed.count.iter().enumerate() {
            logcnt[[layer, e]] = count as i64;
        }
    }
    let most = logcnt.iter().copied().max().unwrap_or(1) as usize;
    let mut log2phy = Array3::from_elem((layers, experts, most), -1);
    for ((layer, slot), &expert) in phy2log.indexed_iter() {
        log2phy[[layer, expert as usize, phy_rank[[layer, slot]]]] = slot as i64;
    }
    Ok(Placement { phy2log, log2phy, logcnt })
}

/// One layer's placement: for each physical slot its logical expert and replica rank, and
/// each expert's replica count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerPlacement {
    pub expert: Vec<usize>,
    pub replica: Vec<usize>,
    pub count: Vec<usize>,
}

/// EPLB's hierarchical placement of one layer (the global one with `groups = nodes = 1`):
/// 1. the groups' loads packed onto the nodes, as many groups on each ([`balanced_packing`]);
/// 2. within each node, its experts replicated to `replicas / nodes` ([`replicate_experts`]);
/// 3. each node's replicas, carrying load / count each, packed onto its GPUs, as many on each.
///
/// Node n's experts, in the order step 1 packed their groups, are its "node-local" experts
/// n·E/N, …; node n's GPUs hold slots n·R/N, ….
pub fn place_layer(loads: &[f32], replicas: usize, groups: usize, nodes: usize, gpus: usize) -> LayerPlacement {
    let experts = loads.len();
    let group_size = experts / groups;
    let groups_per_node = groups / nodes;
    let (experts_per_node, replicas_per_node) = (experts / nodes, replicas / nodes);
    let (gpus_per_node, replicas_per_gpu) = (gpus / nodes, replicas / gpus);

    // Step 1. node_local[e]: expert e's place among all nodes' experts (node-major).
    let group_loads: Vec<f32> = loads.chunks(group_size).map(|g| g.iter().sum()).collect();
    let (group_node, group_rank) = balanced_packing(&group_loads, nodes);
    let node_local: Vec<usize> = (0..experts)
        .map(|e| {
            let g = e / group_size;
            (group_node[g] * groups_per_node + group_rank[g]) * group_size + e % group_size
        })
        .collect();
    let expert_at = inverse(&node_local);

    let mut placement =
        LayerPlacement { expert: vec![0; replicas], replica: vec![0; replicas], count: vec![0; experts] };
    for node in 0..nodes {
        // Step 2, on this node's experts.
        let local: Vec<usize> = expert_at[node * experts_per_node..(node + 1) * experts_per_node].to_vec();
        let local_loads: Vec<f32> = local.iter().map(|&e| loads[e]).collect();
        let copies = replicate_experts(&local_loads, replicas_per_node);
        // Step 3: each replica carries its expert's load shared among its copies.
        let replica_loads: Vec<f32> = copies.expert.iter().map(|&m| local_loads[m] / copies.count[m] as f32).collect();
        let (gpu, rank_in_gpu) = balanced_packing(&replica_loads, gpus_per_node);
        for (r, &m) in copies.expert.iter().enumerate() {
            let slot = node * replicas_per_node + gpu[r] * replicas_per_gpu + rank_in_gpu[r];
            placement.expert[slot] = local[m];
            placement.replica[slot] = copies.replica[r];
        }
        for (m, &count) in copies.count.iter().enumerate() {
            placement.count[local[m]] = count;
        }
    }
    placement
}

/// The inverse of a permutation.
fn inverse(permutation: &[usize]) -> Vec<usize> {
    let mut inverse = vec![0; permutation.len()];
    for (i, &p) in permutation.iter().enumerate() {
        inverse[p] = i;
    }
    inverse
}

/// Replicas of `loads.len()` experts in `physical` slots: the first slots hold each expert
/// once, and each further slot copies the expert with the largest load per replica (the
/// lowest index among equals), which minimises the largest replica load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replicas {
    /// The expert of each physical replica.
    pub expert: Vec<usize>,
    /// Which copy of its expert each replica is (0 for the first).
    pub replica: Vec<usize>,
    /// Copies of each expert.
    pub count: Vec<usize>,
}

/// EPLB's `replicate_experts` for one row; `physical` ≥ `loads.len()`.
pub fn replicate_experts(loads: &[f32], physical: usize) -> Replicas {
    let mut replicas =
        Replicas { expert: (0..loads.len()).collect(), replica: vec![0; loads.len()], count: vec![1; loads.len()] };
    for _ in loads.len()..physical {
        let mut best = 0;
        let mut best_load = f32::NEG_INFINITY;
        for (e, &load) in loads.iter().enumerate() {
            let per_replica = load / replicas.count[e] as f32;
            // Strictly larger: the first of equal maxima, as torch's `max(dim)` returns.
            if per_replica > best_load {
                (best, best_load) = (e, per_replica);
            }
        }
        replicas.expert.push(best);
        replicas.replica.push(replicas.count[best]);
        replicas.count[best] += 1;
    }
    replicas
}

/// EPLB's `balanced_packing` for one row: `weights.len()` items into `packs` packs of
/// `weights.len() / packs` items each, heaviest first ([`descending_order`]), each into the
/// lightest pack that is not full (the lowest index among equals). Returns each item's pack
/// and its place in the pack.
pub fn balanced_packing(weights: &[f32], packs: usize) -> (Vec<usize>, Vec<usize>) {
    let per_pack = weights.len() / packs;
    if per_pack == 1 {
        // One item a pack: EPLB keeps the items in place, without sorting.
        return ((0..weights.len()).collect(), vec![0; weights.len()]);
    }
    let mut pack_of = vec![0; weights.len()];
    let mut rank_in_pack = vec![0; weights.len()];
    let mut pack_weight = vec![0.0f32; packs];
    let mut pack_items = vec![0; packs];
    for item in descending_order(weights) {
        let pack = (0..packs)
            .filter(|&p| pack_items[p] < per_pack)
            .fold(None, |best: Option<usize>, p| match best {
                Some(b) if pack_weight[b] <= pack_weight[p] => Some(b),
                _ => Some(p),
            })
            .expect("the items fill the packs exactly");
        pack_of[item] = pack;
        rank_in_pack[item] = pack_items[pack];
        pack_weight[pack] += weights[item];
        pack_items[pack] += 1;
    }
    (pack_of, rank_in_pack)
}

/// The indices of `values` from the largest down, in the order torch's CPU
/// `sort(descending=True)` gives: libstdc++'s `std::sort` (introsort: median-of-three
/// quicksort down to runs of 16, then one insertion sort), which moves equal values around.
pub fn descending_order(values: &[f32]) -> Vec<usize> {
    let mut items: Vec<(f32, usize)> = values.iter().copied().zip(0..).collect();
    // torch's descending comparison: larger first, NaN before numbers.
    let before = |a: &(f32, usize), b: &(f32, usize)| a.0 > b.0 || (a.0.is_nan() && !b.0.is_nan());
    let n = items.len();
    if n > 1 {
        introsort_loop(&mut items, 0, n, &before);
        final_insertion_sort(&mut items, &before);
    }
    items.into_iter().map(|(_, i)| i).collect()
}

/// Runs shorter than this are left to the final insertion sort (libstdc++'s `_S_threshold`).
const THRESHOLD: usize = 16;

type Before = dyn Fn(&(f32, usize), &(f32, usize)) -> bool;

fn introsort_loop(items: &mut [(f32, usize)], first: usize, mut last: usize, before: &Before) {
    while last - first > THRESHOLD {
        // Median of the second, middle and last items moved to the front as the pivot.
        let middle = first + (last - first) / 2;
        move_median_to_first(items, first, first + 1, middle, last - 1, before);
        let cut = unguarded_partition(items, first + 1, last, first, before);
        introsort_loop(items, cut, last, before);
        last = cut;
    }
}

fn move_median_to_first(items: &mut [(f32, usize)], result: usize, a: usize, b: usize, c: usize, before: &Before) {
    let median = if before(&items[a], &items[b]) {
        if before(&items[b], &items[c]) {
            b
        } else if before(&items[a], &items[c]) {
            c
        } else {
            a
        }
    } else if before(&items[a], &items[c]) {
        a
    } else if before(&items[b], &items[c]) {
        c
    } else {
        b
    };
    items.swap(result, median);
}

fn unguarded_partition(
    items: &mut [(f32, usize)],
    mut first: usize,
    mut last: usize,
    pivot: usize,
    before: &Before,
) -> usize {
    loop {
        while before(&items[first], &items[pivot]) {
            first += 1;
        }
        last -= 1;
        while before(&items[pivot], &items[last]) {
            last -= 1;
        }
        if first >= last {
            return first;
        }
        items.swap(first, last);
        first += 1;
    }
}

fn final_insertion_sort(items: &mut [(f32, usize)], before: &Before) {
    let n = items.len();
    for i in 1..n {
        if i < THRESHOLD && before(&items[i], &items[0]) {
            // Before everything so far: shift the run right by one.
            items[..=i].rotate_right(1);
        } else {
            // libstdc++ scans without a bound here (the partitioning left something no later
            // than this item in front); the bound only guards against a broken comparison.
            let value = items[i];
            let mut j = i;
            while j > 0 && before(&value, &items[j - 1]) {
                items[j] = items[j - 1];
                j -= 1;
            }
            items[j] = value;
        }
    }
}

/// Each GPU's load in one layer: the sum over its slots of the slot's expert load divided
/// by that expert's replica count (the balance EPLB aims for).
pub fn gpu_loads(weight: &[i64], phy2log: &[i64], logcnt: &[i64], gpus: usize) -> Vec<f64> {
    let per_gpu = phy2log.len() / gpus;
    phy2log
        .chunks(per_gpu)
        .map(|slots| slots.iter().map(|&e| weight[e as usize] as f64 / logcnt[e as usize] as f64).sum())
        .collect()
}

/// The largest GPU load over the mean GPU load (1 is balanced; 1 where nothing is loaded).
pub fn max_over_mean(gpu_loads: &[f64]) -> f64 {
    let mean = gpu_loads.iter().sum::<f64>() / gpu_loads.len().max(1) as f64;
    let max = gpu_loads.iter().copied().fold(0.0, f64::max);
    if mean > 0.0 {
        max / mean
    } else {
        1.0
    }
}

/// Each GPU's load without EPLB and without redundant experts: expert e on GPU
/// e / (experts / gpus), in index order; `None` unless the GPUs divide the experts.
pub fn index_order_gpu_loads(weight: &[i64], gpus: usize) -> Option<Vec<f64>> {
    if gpus == 0 || weight.is_empty() || !weight.len().is_multiple_of(gpus) {
        return None;
    }
    Some(weight.chunks(weight.len() / gpus).map(|c| c.iter().map(|&w| w as f64).sum()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flag(weight: &Array2<i64>, replicas: usize, groups: usize, nodes: usize, gpus: usize) -> &'static str {
        match rebalance_experts(weight.view(), replicas, groups, nodes, gpus) {
            Err(Error::Setting { name, .. }) => name,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn what_eplb_asserts_against_is_refused_naming_the_flag() {
        let weight = Array2::from_elem((1, 12), 1);
        assert_eq!(flag(&weight, 16, 5, 1, 8), "--groups", "12 experts in 5 groups, hierarchical");
        assert_eq!(flag(&weight, 16, 4, 2, 3), "--gpus", "3 GPUs on 2 nodes");
        assert_eq!(flag(&weight, 18, 4, 2, 8), "--replicas", "18 replicas on 8 GPUs");
        assert_eq!(flag(&weight, 8, 4, 2, 8), "--replicas", "fewer replicas than experts");
        assert_eq!(flag(&weight, 16, 0, 2, 8), "--groups");
        // The global policy ignores the groups: 5 groups of 12 experts are no error there.
        assert!(rebalance_experts(weight.view(), 16, 5, 2, 8).is_ok());
        let mut negative = weight.clone();
        negative[[0, 7]] = -3;
        let err = rebalance_experts(negative.view(), 16, 4, 2, 8).unwrap_err().to_string();
        assert!(err.contains("`weight`[0, 7] is -3"), "{err}");
    }

    #[test]
    fn imbalance_is_the_largest_gpu_load_over_the_mean() {
        assert_eq!(max_over_mean(&[1.0, 3.0]), 1.5);
        assert_eq!(max_over_mean(&[0.0, 0.0]), 1.0);
        assert_eq!(index_order_gpu_loads(&[1, 2, 3, 4, 5, 6], 3), Some(vec![3.0, 7.0, 11.0]));
        assert_eq!(index_order_gpu_loads(&[1, 2, 3, 4], 3), None);
    }

    #[test]
    fn policy_follows_the_divisibility_of_groups_by_nodes() {
        assert_eq!(Policy::of(8, 4), Policy::Hierarchical);
        assert_eq!(Policy::of(3, 2), Policy::Global);
    }
}
