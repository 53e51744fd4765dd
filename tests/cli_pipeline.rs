//! `v3lab pipeline`: Table 2's DualPipe numbers for Figure 5's setting (8 ranks, 20
//! micro-batches) with F = B − W, the files `--out` writes, and errors naming the flag.

mod common;

#[test]
fn dualpipe_for_figure_5_matches_table_2_and_writes_the_chart() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("figures");
    let args = [
        "pipeline",
        "--schedule",
        "dualpipe",
        "--ranks",
        "8",
        "--micro-batches",
        "20",
        "--f",
        "1",
        "--b",
        "2",
        "--w",
        "1",
    ];
    let mut with_out = args.to_vec();
    with_out.extend(["--json", "--out", out.to_str().unwrap()]);
    let (ok, stdout, stderr) = common::v3lab(&with_out);
    assert!(ok, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    // Table 2: (PP/2 − 1)(F&B + B − 3W) = 3 × (3 + 2 − 3) = 6, activations PP + 1 = 9.
    assert_eq!(report["bubble"], 6.0);
    assert_eq!(report["table2_bubble"], 6.0);
    assert_eq!(report["peak_activations"], 9);
    for file in ["dualpipe.svg", "dualpipe.png", "dualpipe.json"] {
        assert!(out.join(file).exists(), "{file}");
    }
    let (ok, text, _) = common::v3lab(&args);
    assert!(ok && text.contains("| bubble | 6 | 6 |"), "{text}");
}

#[test]
fn bad_pipeline_settings_name_the_flag() {
    let base = ["pipeline", "--schedule", "dualpipe", "--f", "1", "--b", "2"];
    let with = |extra: &[&'static str]| base.iter().copied().chain(extra.iter().copied()).collect::<Vec<_>>();
    common::assert_fails_with(&with(&["--ranks", "3", "--micro-batches", "12", "--w", "1"]), "--ranks");
    common::assert_fails_with(&with(&["--ranks", "4", "--micro-batches", "6", "--w", "1"]), "--micro-batches");
    common::assert_fails_with(&with(&["--ranks", "4", "--micro-batches", "8", "--w=-1"]), "--w");
}
