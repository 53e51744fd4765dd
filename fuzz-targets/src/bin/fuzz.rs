//! The stable-toolchain fuzzer of v3lab's input files: coverage-less mutational fuzzing on
//! crates.io alone (fuzz/README.md).
//!
//! ```text
//! cargo run --profile fuzz -p fuzz-targets --bin fuzz -- [--target NAME|all] [--seconds N]
//!     [--corpus DIR] [--grown DIR] [--findings DIR] [--seed N] [--max-len BYTES]
//!     [--timeout-s N] [--max-alloc-mb N] [--address-space-mb N]
//! cargo run --profile fuzz -p fuzz-targets --bin fuzz -- --replay NAME FILE...
//! cargo run --profile fuzz -p fuzz-targets --bin fuzz -- --write-seeds DIR
//! ```
//!
//! The supervisor runs each target (`all`: the seconds split evenly) in a worker process
//! whose address space is capped and whose single allocations above `--max-alloc-mb` fail.
//! The worker mutates inputs drawn from its corpus (the committed seeds, the built-in
//! seeds, and what earlier runs grew), writes each input to a file (`/dev/shm` where there is one)
//! before running it, catches panics (each one saved as `panic-<hash>`, with its message),
//! and keeps an input whose outcome (the normalised errors and stages it reached) is new.
//! A worker that dies (an abort on a failed allocation) or stops reporting for
//! `--timeout-s` (a hang) is a finding too: the supervisor saves its `current` input as
//! `crash-<hash>` or `hang-<hash>` and starts a new worker for the time left. Exits 1
//! when anything was found.

use fuzz_targets::mutate::{self, Rng, Source};
use fuzz_targets::{run_with_outcome, Target};
use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------
// A ceiling on single allocations: above it the allocator fails, as the system's would on
// a machine without that much memory, and Rust aborts — a finding, never a swap storm.

struct CappedAlloc;

static MAX_ALLOC: AtomicUsize = AtomicUsize::new(usize::MAX);

#[allow(unsafe_code)]
unsafe impl std::alloc::GlobalAlloc for CappedAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        if layout.size() > MAX_ALLOC.load(Ordering::Relaxed) {
            let msg = b"fuzz: allocation above --max-alloc-mb refused\n";
            // SAFETY: writing a static buffer to stderr; no allocation.
            unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded as is.
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: forwarded as is.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        if layout.size() > MAX_ALLOC.load(Ordering::Relaxed) {
            let msg = b"fuzz: allocation above --max-alloc-mb refused\n";
            // SAFETY: as above.
            unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded as is.
        unsafe { std::alloc::System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        if new_size > MAX_ALLOC.load(Ordering::Relaxed) {
            let msg = b"fuzz: reallocation above --max-alloc-mb refused\n";
            // SAFETY: as above.
            unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded as is.
        unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: CappedAlloc = CappedAlloc;

#[allow(unsafe_code)]
fn cap_address_space(mb: u64) {
    let bytes = mb << 20;
    let limit = libc::rlimit { rlim_cur: bytes, rlim_max: bytes };
    // SAFETY: a plain system call on a stack value.
    if unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) } != 0 {
        eprintln!("fuzz: could not cap the address space at {mb} MiB");
    }
}

// ---------------------------------------------------------------------------------------

#[derive(Clone)]
struct Options {
    targets: Vec<String>,
    seconds: f64,
    corpus: PathBuf,
    grown: PathBuf,
    findings: PathBuf,
    seed: u64,
    max_len: usize,
    timeout_s: u64,
    max_alloc_mb: usize,
    address_space_mb: u64,
    /// Where the worker writes each input before it runs it (fast storage: a RAM disk).
    current: Option<PathBuf>,
}

fn usage() -> ! {
    eprintln!(
        "usage: fuzz [--target NAME|all] [--seconds N] [--corpus DIR] [--grown DIR] [--findings DIR] [--seed N]\n\
         \x20           [--max-len BYTES] [--timeout-s N] [--max-alloc-mb N] [--address-space-mb N]\n\
         \x20      fuzz --replay NAME FILE...\n\
         \x20      fuzz --write-seeds DIR\n\
         targets: {}",
        fuzz_targets::TARGETS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
    );
    std::process::exit(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--replay") {
        return replay(&args[1..]);
    }
    if args.first().map(String::as_str) == Some("--write-seeds") {
        let dir = PathBuf::from(args.get(1).unwrap_or_else(|| usage()));
        for (name, _) in fuzz_targets::TARGETS {
            let sub = dir.join(name);
            std::fs::create_dir_all(&sub).unwrap();
            for (seed, bytes) in fuzz_targets::builtin_seeds(name) {
                std::fs::write(sub.join(seed), bytes).unwrap();
            }
        }
        return ExitCode::SUCCESS;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut o = Options {
        targets: vec!["all".into()],
        seconds: 60.0,
        corpus: root.join("fuzz/corpus"),
        grown: root.join("target/fuzz-corpus"),
        findings: root.join("target/fuzz-findings"),
        seed: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64,
        max_len: 1 << 18,
        timeout_s: 20,
        max_alloc_mb: 1024,
        address_space_mb: 8192,
        current: None,
    };
    let mut worker = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().cloned().unwrap_or_else(|| usage());
        match a.as_str() {
            "--target" => o.targets = value().split(',').map(String::from).collect(),
            "--seconds" => o.seconds = value().parse().unwrap_or_else(|_| usage()),
            "--corpus" => o.corpus = value().into(),
            "--grown" => o.grown = value().into(),
            "--findings" => o.findings = value().into(),
            "--seed" => o.seed = value().parse().unwrap_or_else(|_| usage()),
            "--max-len" => o.max_len = value().parse().unwrap_or_else(|_| usage()),
            "--timeout-s" => o.timeout_s = value().parse().unwrap_or_else(|_| usage()),
            "--max-alloc-mb" => o.max_alloc_mb = value().parse().unwrap_or_else(|_| usage()),
            "--address-space-mb" => o.address_space_mb = value().parse().unwrap_or_else(|_| usage()),
            "--current" => o.current = Some(value().into()),
            "--worker" => worker = true,
            _ => usage(),
        }
    }
    if o.targets == ["all"] {
        o.targets = fuzz_targets::TARGETS.iter().map(|(n, _)| n.to_string()).collect();
    }
    for t in &o.targets {
        if fuzz_targets::target(t).is_none() {
            eprintln!("fuzz: no target `{t}`");
            usage();
        }
    }
    if worker {
        return run_worker(&o);
    }
    supervise(&o)
}

/// Runs each file through a target, printing its outcome (a panic propagates).
fn replay(args: &[String]) -> ExitCode {
    let Some((name, files)) = args.split_first() else { usage() };
    let target = fuzz_targets::target(name).unwrap_or_else(|| usage());
    for f in files {
        let data = std::fs::read(f).unwrap_or_else(|e| panic!("{f}: {e}"));
        println!("{f}: {}", run_with_outcome(target, &data));
    }
    fuzz_targets::remove_scratch();
    ExitCode::SUCCESS
}

fn hash(data: &[u8]) -> String {
    // FNV-1a, 64 bits: names findings and grown inputs by content.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

// ---------------------------------------------------------------------------------------
// Supervisor

#[derive(Default, Debug)]
struct Totals {
    execs: u64,
    seconds: f64,
    corpus: usize,
    seeds: usize,
    panics: u64,
    crashes: u64,
    hangs: u64,
    restarts: u64,
}

fn supervise(o: &Options) -> ExitCode {
    let per_target = o.seconds / o.targets.len() as f64;
    println!("fuzz: {} target(s), {per_target:.0} s each, --seed {}", o.targets.len(), o.seed);
    let mut all = Vec::new();
    for (k, target) in o.targets.iter().enumerate() {
        let totals = supervise_target(o, target, per_target, o.seed.wrapping_add(k as u64 * 0x1000));
        println!(
            "fuzz {target}: {} execs in {:.0} s ({:.0} exec/s), corpus {} ({} seeds), findings: {} panics, {} crashes, {} hangs",
            totals.execs,
            totals.seconds,
            totals.execs as f64 / totals.seconds.max(1e-9),
            totals.corpus,
            totals.seeds,
            totals.panics,
            totals.crashes,
            totals.hangs
        );
        all.push((target.clone(), totals));
    }
    let summary: Vec<_> = all
        .iter()
        .map(|(t, s)| {
            serde_json::json!({
                "target": t, "execs": s.execs, "seconds": s.seconds, "exec_per_s": s.execs as f64 / s.seconds.max(1e-9),
                "corpus": s.corpus, "seeds": s.seeds, "panics": s.panics, "crashes": s.crashes, "hangs": s.hangs,
                "worker_restarts": s.restarts,
            })
        })
        .collect();
    let _ = std::fs::create_dir_all(&o.findings);
    let _ = std::fs::write(o.findings.join("summary.json"), serde_json::to_string_pretty(&summary).unwrap());
    let found: u64 = all.iter().map(|(_, s)| s.panics + s.crashes + s.hangs).sum();
    let execs: u64 = all.iter().map(|(_, s)| s.execs).sum();
    println!("fuzz: {execs} execs over {} targets, {found} findings (in {})", all.len(), o.findings.display());
    if found > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn supervise_target(o: &Options, target: &str, seconds: f64, seed: u64) -> Totals {
    let findings = o.findings.join(target);
    std::fs::create_dir_all(&findings).expect("creating the findings folder");
    let current = fuzz_targets::scratch_base().join(format!("v3lab-fuzz-current-{}-{target}", std::process::id()));
    let start = Instant::now();
    let mut totals = Totals::default();
    let mut round = 0u64;
    loop {
        let left = seconds - start.elapsed().as_secs_f64();
        if left < 0.5 && round > 0 {
            break;
        }
        let stderr = std::fs::File::create(findings.join("worker.log")).expect("the worker's log");
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--worker", "--target", target, "--seconds", &format!("{:.3}", left.max(0.5))])
            .args(["--corpus", &o.corpus.display().to_string(), "--grown", &o.grown.display().to_string()])
            .args(["--findings", &o.findings.display().to_string(), "--seed", &seed.wrapping_add(round).to_string()])
            .args(["--max-len", &o.max_len.to_string(), "--max-alloc-mb", &o.max_alloc_mb.to_string()])
            .args(["--address-space-mb", &o.address_space_mb.to_string()])
            .args(["--current", &current.display().to_string()])
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("starting a fuzz worker");
        round += 1;
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut last: Option<Vec<(String, f64)>> = None;
        let mut hung = false;
        loop {
            match rx.recv_timeout(Duration::from_secs(o.timeout_s)) {
                Ok(line) => {
                    if let Some(stats) = line.strip_prefix("stats ") {
                        last = Some(parse_stats(stats));
                    } else {
                        println!("{line}");
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    hung = true;
                    let _ = child.kill();
                    break;
                }
            }
        }
        let status = child.wait().expect("waiting for the fuzz worker");
        let get = |k: &str| last.as_ref().and_then(|s| s.iter().find(|(n, _)| n == k).map(|(_, v)| *v)).unwrap_or(0.0);
        totals.execs += get("execs") as u64;
        totals.panics += get("panics") as u64;
        totals.corpus = get("corpus") as usize;
        totals.seeds = get("seeds") as usize;
        if hung || !status.success() {
            let current = std::fs::read(&current).unwrap_or_default();
            let kind = if hung { "hang" } else { "crash" };
            let path = findings.join(format!("{kind}-{}", hash(&current)));
            let _ = std::fs::write(&path, &current);
            let log = std::fs::read_to_string(findings.join("worker.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(6).collect::<Vec<_>>().into_iter().rev().collect();
            eprintln!("fuzz {target}: {kind} ({status}), input saved as {}\n  {}", path.display(), tail.join("\n  "));
            let _ = std::fs::write(path.with_extension("log"), &log);
            if hung {
                totals.hangs += 1;
            } else {
                totals.crashes += 1;
            }
            totals.restarts += 1;
            if totals.crashes + totals.hangs > 20 {
                eprintln!("fuzz {target}: more than 20 crashes and hangs, stopping this target");
                break;
            }
            continue;
        }
        if start.elapsed().as_secs_f64() >= seconds - 0.5 {
            break;
        }
    }
    let _ = std::fs::remove_file(&current);
    totals.seconds = start.elapsed().as_secs_f64();
    totals
}

fn parse_stats(s: &str) -> Vec<(String, f64)> {
    s.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| v.parse().ok().map(|v| (k.to_string(), v)))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Worker

#[derive(Clone, Copy)]
enum Kind {
    Json,
    Safetensors,
    Folder,
    Program,
}

fn kind(target: &str) -> Kind {
    match target {
        "config_json" | "train_json" => Kind::Json,
        "checkpoint_folder" => Kind::Folder,
        "checkpoint_header" => Kind::Program,
        _ => Kind::Safetensors,
    }
}

fn read_dir_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_file())
        .filter_map(|e| Some((e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).ok()?)))
        .collect();
    files.sort();
    files
}

thread_local! {
    static PANIC: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

fn run_worker(o: &Options) -> ExitCode {
    MAX_ALLOC.store(o.max_alloc_mb << 20, Ordering::Relaxed);
    cap_address_space(o.address_space_mb);
    std::panic::set_hook(Box::new(|info| {
        let msg = match info.payload().downcast_ref::<&str>() {
            Some(s) => s.to_string(),
            None => info.payload().downcast_ref::<String>().cloned().unwrap_or_default(),
        };
        let at = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
        let trace = std::backtrace::Backtrace::force_capture();
        let report = format!("panicked at {at}: {msg}\n{trace}");
        // In the worker's log too: a panic outside a target (in the fuzzer) ends the worker.
        eprintln!("{}", report.lines().next().unwrap_or(""));
        PANIC.with(|p| *p.borrow_mut() = Some(report));
    }));
    let name = &o.targets[0];
    let target: Target = fuzz_targets::target(name).unwrap();
    let kind = kind(name);
    let findings = o.findings.join(name);
    let grown_dir = o.grown.join(name);
    std::fs::create_dir_all(&grown_dir).expect("creating the grown corpus folder");
    let mut rng = Rng(o.seed);

    // The corpus: committed seeds, built-in seeds, what earlier runs grew.
    let mut corpus: Vec<Vec<u8>> = Vec::new();
    let mut known: HashSet<String> = HashSet::new();
    let mut seen_inputs: HashSet<String> = HashSet::new();
    for (_, bytes) in read_dir_files(&o.corpus.join(name)).into_iter().chain(fuzz_targets::builtin_seeds(name)) {
        if seen_inputs.insert(hash(&bytes)) {
            corpus.push(bytes);
        }
    }
    let seeds = corpus.len();
    for (_, bytes) in read_dir_files(&grown_dir) {
        if seen_inputs.insert(hash(&bytes)) {
            corpus.push(bytes);
        }
    }
    let current = o.current.clone().unwrap_or_else(|| findings.join("current"));
    let mut panics = 0u64;
    let mut panic_sites: HashSet<String> = HashSet::new();
    let mut execs = 0u64;
    let mut try_one = |input: &[u8], corpus: &mut Vec<Vec<u8>>, known: &mut HashSet<String>, panics: &mut u64| {
        std::fs::write(&current, input).expect("writing the current input");
        match std::panic::catch_unwind(|| run_with_outcome(target, input)) {
            Ok(outcome) => {
                if known.insert(outcome) && corpus.len() < 4096 && seen_inputs.insert(hash(input)) {
                    let _ = std::fs::write(grown_dir.join(hash(input)), input);
                    corpus.push(input.to_vec());
                }
            }
            Err(_) => {
                *panics += 1;
                let report = PANIC.with(|p| p.borrow_mut().take()).unwrap_or_default();
                let site = report.lines().next().unwrap_or("").to_string();
                let path = findings.join(format!("panic-{}", hash(input)));
                if panic_sites.insert(site.clone()) {
                    let _ = std::fs::write(&path, input);
                    let _ = std::fs::write(path.with_extension("txt"), &report);
                    println!("fuzz {name}: PANIC {site} (input saved as {})", path.display());
                }
            }
        }
    };
    let start = Instant::now();
    let mut last_report = Instant::now();
    let report = |execs: u64, corpus: usize, panics: u64| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "stats execs={execs} corpus={corpus} seeds={seeds} panics={panics}");
        let _ = out.flush();
    };
    report(execs, corpus.len(), panics);
    // The corpus itself first (its outcomes become the known ones), within the time given
    // and reporting as it goes: a large grown corpus takes a while.
    let initial: Vec<Vec<u8>> = corpus.clone();
    for input in &initial {
        if start.elapsed().as_secs_f64() >= o.seconds {
            break;
        }
        try_one(input, &mut corpus, &mut known, &mut panics);
        execs += 1;
        if last_report.elapsed() >= Duration::from_secs(1) {
            report(execs, corpus.len(), panics);
            last_report = Instant::now();
        }
    }
    while start.elapsed().as_secs_f64() < o.seconds {
        let parent = &corpus[rng.below(corpus.len())];
        let other = &corpus[rng.below(corpus.len())];
        let mut input = parent.clone();
        let stacked = 1 + rng.below(4);
        for _ in 0..stacked {
            input = mutate_input(kind, &input, other, &mut rng);
        }
        input.truncate(o.max_len);
        try_one(&input, &mut corpus, &mut known, &mut panics);
        execs += 1;
        if last_report.elapsed() >= Duration::from_secs(1) {
            report(execs, corpus.len(), panics);
            last_report = Instant::now();
        }
    }
    report(execs, corpus.len(), panics);
    let _ = std::fs::remove_file(&current);
    fuzz_targets::remove_scratch();
    ExitCode::SUCCESS
}

fn mutate_input(kind: Kind, input: &[u8], other: &[u8], rng: &mut Rng) -> Vec<u8> {
    match kind {
        Kind::Json => mutate_json_file(input, other, rng),
        Kind::Safetensors => mutate_safetensors_file(input, other, rng),
        Kind::Program => {
            let mut out = input.to_vec();
            mutate::mutate_bytes(&mut out, other, rng);
            out.truncate(96);
            out
        }
        Kind::Folder => {
            if rng.chance(8) {
                let mut out = input.to_vec();
                mutate::mutate_bytes(&mut out, other, rng);
                return out;
            }
            let mut files: Vec<(&str, Vec<u8>)> =
                fuzz_targets::unpack_folder(input).into_iter().map(|(n, b)| (n, b.to_vec())).collect();
            let others = fuzz_targets::unpack_folder(other);
            match rng.below(10) {
                0 if !files.is_empty() => {
                    files.remove(rng.below(files.len()));
                }
                1 if !others.is_empty() => {
                    let (n, b) = others[rng.below(others.len())];
                    files.retain(|(m, _)| *m != n);
                    files.push((n, b.to_vec()));
                }
                _ if !files.is_empty() => {
                    let k = rng.below(files.len());
                    let (n, b) = &files[k];
                    let mutated = if n.ends_with(".json") {
                        mutate_json_file(b, &[], rng)
                    } else {
                        mutate_safetensors_file(b, &[], rng)
                    };
                    files[k].1 = mutated;
                }
                _ => {}
            }
            let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (*n, b.as_slice())).collect();
            fuzz_targets::pack_folder(&refs)
        }
    }
}

fn mutate_json_file(input: &[u8], other: &[u8], rng: &mut Rng) -> Vec<u8> {
    if rng.below(3) > 0 {
        if let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(input) {
            for _ in 0..1 + rng.below(3) {
                mutate::mutate_json(&mut value, rng);
            }
            return mutate::json_text(&value, rng);
        }
    }
    let mut out = input.to_vec();
    mutate::mutate_bytes(&mut out, other, rng);
    out
}

fn mutate_safetensors_file(input: &[u8], other: &[u8], rng: &mut Rng) -> Vec<u8> {
    if rng.below(3) > 0 {
        return mutate::mutate_safetensors(input, rng);
    }
    let mut out = input.to_vec();
    mutate::mutate_bytes(&mut out, other, rng);
    out
}
