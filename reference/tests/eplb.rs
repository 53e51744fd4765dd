//! EPLB's placements, exactly: the README's example against the output it prints and the
//! loads per GPU worked out from the published algorithm (`../shared/reference/paper-numbers.md`
//! §5), and every case of `data/eplb/cases.json` against the outputs of deepseek-ai/EPLB's own
//! `rebalance_experts` (see `data/eplb/README.md`).

use ndarray::{Array2, Array3};
use serde_json::Value;
use v3lab_reference::eplb::{descending_order, gpu_loads, rebalance_experts};

fn cases() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/eplb/cases.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn ints(v: &Value) -> Vec<i64> {
    let mut out = Vec::new();
    flatten(v, &mut out);
    out
}

fn flatten(v: &Value, out: &mut Vec<i64>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| flatten(i, out)),
        other => out.push(other.as_i64().unwrap()),
    }
}

fn rows(v: &Value) -> usize {
    v.as_array().unwrap().len()
}

fn readme_weight() -> Array2<i64> {
    Array2::from_shape_vec(
        (2, 12),
        vec![
            90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86, //
            20, 107, 104, 64, 19, 197, 187, 157, 172, 86, 16, 27,
        ],
    )
    .unwrap()
}

#[test]
fn readme_example_prints_what_the_readme_prints() {
    let placement = rebalance_experts(readme_weight().view(), 16, 4, 2, 8).unwrap();
    let readme =
        [[5, 6, 5, 7, 8, 4, 3, 4, 10, 9, 10, 2, 0, 1, 11, 1], [7, 10, 6, 8, 6, 11, 8, 9, 2, 4, 5, 1, 5, 0, 3, 1]];
    assert_eq!(placement.phy2log, Array2::from_shape_vec((2, 16), readme.concat()).unwrap());
    // Replica counts and per-GPU loads as paper-numbers.md §5 works them out.
    assert_eq!(placement.logcnt.row(0).to_vec(), [1, 2, 1, 1, 2, 2, 1, 1, 1, 1, 2, 1]);
    assert_eq!(placement.logcnt.row(1).to_vec(), [1, 2, 1, 1, 1, 2, 2, 1, 2, 1, 1, 1]);
    let weight = readme_weight();
    let loads = |layer: usize| {
        gpu_loads(
            weight.row(layer).as_slice().unwrap(),
            placement.phy2log.row(layer).as_slice().unwrap(),
            placement.logcnt.row(layer).as_slice().unwrap(),
            8,
        )
    };
    assert_eq!(loads(0), [121.5, 86.5, 125.0, 113.0, 147.5, 131.5, 156.0, 152.0]);
    assert_eq!(loads(1), [173.0, 179.5, 120.5, 172.0, 123.0, 152.0, 118.5, 117.5]);
}

#[test]
fn every_case_is_placed_as_eplb_places_it() {
    let data = cases();
    for case in data["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let (layers, experts) = (rows(&case["weight"]), rows(&case["weight"][0]));
        let weight = Array2::from_shape_vec((layers, experts), ints(&case["weight"])).unwrap();
        let arg = |key: &str| case[key].as_u64().unwrap() as usize;
        let placement =
            rebalance_experts(weight.view(), arg("num_replicas"), arg("num_groups"), arg("num_nodes"), arg("num_gpus"))
                .unwrap();
        let expected_phy2log = Array2::from_shape_vec(placement.phy2log.dim(), ints(&case["phy2log"])).unwrap();
        assert_eq!(placement.phy2log, expected_phy2log, "{name}: phy2log");
        let expected_logcnt = Array2::from_shape_vec((layers, experts), ints(&case["logcnt"])).unwrap();
        assert_eq!(placement.logcnt, expected_logcnt, "{name}: logcnt");
        let most = rows(&case["log2phy"][0][0]);
        let expected_log2phy = Array3::from_shape_vec((layers, experts, most), ints(&case["log2phy"])).unwrap();
        assert_eq!(placement.log2phy, expected_log2phy, "{name}: log2phy");
    }
}

#[test]
fn equal_loads_are_ordered_as_torch_sorts_them() {
    let data = cases();
    for sort in data["sorts"].as_array().unwrap() {
        let values: Vec<f32> = sort["values"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        let expected: Vec<usize> = ints(&sort["indices"]).into_iter().map(|i| i as usize).collect();
        assert_eq!(descending_order(&values), expected, "{} values", values.len());
    }
}
