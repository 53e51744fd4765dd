//! A real multi-domain corpus for the ablations, with no download, mirroring the paper's
//! Figure 9 domains (Wikipedia / Github / DM Mathematics): *prose*, *code* and *math*.
//!
//! The default corpus is assembled once from text already on the machine (see
//! [`sources`]) and a generator ([`math`]), deterministically from a seed, and cached as
//! JSONL. `--corpus PATH` takes a user corpus instead: a folder with one subfolder per
//! domain of UTF-8 text files, or JSONL files of `{"domain": ..., "text": ...}`.
//! Documents go to train or validation by a hash of their key (a file's crate and path,
//! so that versions of one file never straddle the split), never both.

pub mod math;
pub mod sources;

use anyhow::{bail, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::hash::Hasher;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Domain {
    Prose,
    Code,
    Math,
}

impl Domain {
    pub const ALL: [Domain; 3] = [Domain::Prose, Domain::Code, Domain::Math];
    pub fn name(self) -> &'static str {
        match self {
            Domain::Prose => "prose",
            Domain::Code => "code",
            Domain::Math => "math",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Document {
    pub domain: Domain,
    /// What decides the split (stable across runs and crate versions).
    pub key: String,
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CorpusSpec {
    pub seed: u64,
    /// Budget of each domain, train and validation together.
    pub bytes_per_domain: usize,
    /// Share of documents (by hash) that go to validation, in percent.
    pub validation_percent: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Corpus {
    pub train: Vec<Document>,
    pub validation: Vec<Document>,
}

/// Bytes and documents of one (domain, split).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub documents: usize,
    pub bytes: usize,
}

/// A stable 64-bit hash (FNV-1a): the same split on every machine and Rust version.
fn stable_hash(text: &str) -> u64 {
    let mut h = fnv::FnvHasher::default();
    h.write(text.as_bytes());
    h.finish()
}

impl Corpus {
    fn push(&mut self, used: &mut BTreeMap<(Domain, bool), usize>, doc: Document, validation: bool) {
        *used.entry((doc.domain, validation)).or_default() += doc.text.len();
        if validation {
            self.validation.push(doc)
        } else {
            self.train.push(doc)
        }
    }

    /// Whether the file behind `key` (pieces `key#i` go together) belongs to validation.
    fn is_validation(key: &str, validation_percent: u64) -> bool {
        stable_hash(key.split('#').next().unwrap_or_default()) % 100 < validation_percent
    }

    fn from_documents(docs: Vec<Document>, validation_percent: u64) -> Corpus {
        let (validation, train) = docs.into_iter().partition(|d| Self::is_validation(&d.key, validation_percent));
        Corpus { train, validation }
    }

    /// The default corpus: registry docs and sources, the toolchain's book, generated math.
    /// Each (domain, split) is filled to its share of the budget, so that a small budget
    /// still has validation text in every domain.
    pub fn assemble(spec: &CorpusSpec) -> Result<Corpus> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(spec.seed);
        let budget = |validation: bool| {
            let share = if validation { spec.validation_percent } else { 100 - spec.validation_percent };
            spec.bytes_per_domain * share as usize / 100
        };
        let mut candidates = sources::candidates();
        candidates.shuffle(&mut rng);
        let mut used: BTreeMap<(Domain, bool), usize> = BTreeMap::new();
        let mut seen = std::collections::HashSet::new();
        let mut corpus = Corpus::default();
        for (domain, key, path) in candidates {
            let validation = Self::is_validation(&key, spec.validation_percent);
            if used.get(&(domain, validation)).copied().unwrap_or(0) >= budget(validation) {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&path) else { continue }; // not UTF-8: skip
            for doc in sources::documents_of(domain, &key, &text) {
                // The same text vendored twice (two crate versions) counts once.
                if seen.insert(stable_hash(&doc.text)) {
                    corpus.push(&mut used, doc, validation);
                }
            }
        }
        for i in 0.. {
            let key = format!("math/{}/{i}", spec.seed);
            let validation = Self::is_validation(&key, spec.validation_percent);
            let full = |v| used_of(&used, Domain::Math, v) >= budget(v);
            if full(true) && full(false) {
                break;
            }
            let text = math::document(&mut rng, 16);
            if !full(validation) {
                corpus.push(&mut used, Document { domain: Domain::Math, key, text }, validation);
            }
        }
        for domain in [Domain::Prose, Domain::Code] {
            if used_of(&used, domain, false) == 0 {
                bail!(
                    "no {} text found on this machine (cargo registry or toolchain docs); pass --corpus PATH",
                    domain.name()
                );
            }
        }
        Ok(corpus)
    }

    /// The default corpus from `cache_dir` when it was assembled before with `spec`,
    /// otherwise assembled and cached (atomically).
    pub fn cached(spec: &CorpusSpec, cache_dir: &Path) -> Result<Corpus> {
        let file = cache_dir
            .join(format!("corpus-seed{}-{}b-val{}.jsonl", spec.seed, spec.bytes_per_domain, spec.validation_percent));
        if file.exists() {
            let corpus = Self::read_jsonl(&file)?;
            return Ok(Self::from_documents(corpus, spec.validation_percent));
        }
        let corpus = Self::assemble(spec)?;
        std::fs::create_dir_all(cache_dir).with_context(|| format!("creating {}", cache_dir.display()))?;
        let mut text = String::new();
        for doc in corpus.train.iter().chain(&corpus.validation) {
            text.push_str(&serde_json::to_string(doc)?);
            text.push('\n');
        }
        v3lab_reference::io::write_atomically(&file, |f| f.write_all(text.as_bytes()))?;
        Ok(corpus)
    }

    fn read_jsonl(path: &Path) -> Result<Vec<Document>> {
        let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let mut docs = Vec::new();
        for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line.with_context(|| format!("{}: line {}", path.display(), n + 1))?;
            if line.trim().is_empty() {
                continue;
            }
            #[derive(Deserialize)]
            struct Row {
                domain: String,
                text: String,
                key: Option<String>,
            }
            let row: Row = serde_json::from_str(&line).with_context(|| {
                format!("{}: line {}: expected {{\"domain\": ..., \"text\": ...}}", path.display(), n + 1)
            })?;
            let domain = parse_domain(&row.domain).with_context(|| format!("{}: line {}", path.display(), n + 1))?;
            let key = row.key.unwrap_or_else(|| format!("{}:{}", path.display(), n + 1));
            docs.push(Document { domain, key, text: row.text });
        }
        Ok(docs)
    }

    /// A user corpus: a folder with a subfolder per domain of text files, or JSONL file(s).
    pub fn from_user(path: &Path, validation_percent: u64) -> Result<Corpus> {
        std::fs::metadata(path).with_context(|| format!("--corpus {}", path.display()))?;
        let mut docs = Vec::new();
        let jsonl: Vec<PathBuf> =
            if path.is_file() { vec![path.to_path_buf()] } else { sources::files_with(path, "jsonl", 0) };
        for file in &jsonl {
            docs.extend(Self::read_jsonl(file)?);
        }
        if path.is_dir() {
            for sub in std::fs::read_dir(path).with_context(|| format!("reading {}", path.display()))? {
                let sub = sub?.path();
                if !sub.is_dir() {
                    continue;
                }
                let domain = parse_domain(&sub.file_name().unwrap_or_default().to_string_lossy())
                    .with_context(|| format!("folder {}", sub.display()))?;
                for file in walk(&sub) {
                    let text = std::fs::read_to_string(&file)
                        .with_context(|| format!("{} is not UTF-8 text", file.display()))?;
                    let key = file.strip_prefix(path).unwrap_or(&file).display().to_string();
                    docs.push(Document { domain, key, text });
                }
            }
        }
        if docs.is_empty() {
            bail!("{}: no documents (expected domain subfolders of text files, or JSONL files)", path.display());
        }
        Ok(Self::from_documents(docs, validation_percent))
    }

    /// Bytes and documents per domain and split.
    pub fn summary(&self) -> Summary {
        let mut out = Summary::new();
        for (split, docs) in [("train", &self.train), ("validation", &self.validation)] {
            for d in docs {
                let t = out.entry(d.domain.name().to_string()).or_default().entry(split.to_string()).or_default();
                t.documents += 1;
                t.bytes += d.text.len();
            }
        }
        out
    }

    /// The summary as a Markdown table.
    pub fn summary_table(&self) -> String {
        summary_table(&self.summary())
    }
}

/// Bytes and documents per domain, then per split ("train", "validation").
pub type Summary = BTreeMap<String, BTreeMap<String, Tally>>;

/// A summary as a Markdown table.
pub fn summary_table(summary: &Summary) -> String {
    let mut s = String::from(
        "| domain | train docs | train bytes | validation docs | validation bytes |\n|---|---:|---:|---:|---:|\n",
    );
    for (domain, splits) in summary {
        let get = |split: &str| splits.get(split).copied().unwrap_or_default();
        let (t, v) = (get("train"), get("validation"));
        s.push_str(&format!("| {domain} | {} | {} | {} | {} |\n", t.documents, t.bytes, v.documents, v.bytes));
    }
    s
}

fn used_of(used: &BTreeMap<(Domain, bool), usize>, domain: Domain, validation: bool) -> usize {
    used.get(&(domain, validation)).copied().unwrap_or(0)
}

/// Custom domain names are allowed in user corpora only through the three known ones.
fn parse_domain(name: &str) -> Result<Domain> {
    match name.to_ascii_lowercase().as_str() {
        "prose" | "wikipedia" | "text" => Ok(Domain::Prose),
        "code" | "github" => Ok(Domain::Code),
        "math" | "mathematics" | "dm_mathematics" => Ok(Domain::Math),
        other => bail!("unknown domain `{other}` (expected prose, code or math)"),
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut entries: Vec<PathBuf> =
        std::fs::read_dir(dir).map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect()).unwrap_or_default();
    entries.sort();
    for e in entries {
        if e.is_dir() {
            out.extend(walk(&e));
        } else {
            out.push(e);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: CorpusSpec = CorpusSpec { seed: 3, bytes_per_domain: 200_000, validation_percent: 10 };

    #[test]
    fn the_default_corpus_is_deterministic_and_its_splits_are_disjoint() {
        let a = Corpus::assemble(&SMALL).unwrap();
        let b = Corpus::assemble(&SMALL).unwrap();
        assert_eq!(a.train, b.train);
        assert_eq!(a.validation, b.validation);
        let train_keys: std::collections::HashSet<&str> = a.train.iter().map(|d| d.key.as_str()).collect();
        assert!(a.validation.iter().all(|d| !train_keys.contains(d.key.as_str())));
        // Versions of one file share a key prefix (crate/path), so they share a split.
        let stem = |k: &str| k.split('#').next().unwrap().to_string();
        let train_stems: std::collections::HashSet<String> = a.train.iter().map(|d| stem(&d.key)).collect();
        assert!(a.validation.iter().all(|d| !train_stems.contains(&stem(&d.key))));
        let summary = a.summary();
        for domain in Domain::ALL {
            let s = &summary[domain.name()];
            assert!(s["train"].bytes >= SMALL.bytes_per_domain / 2, "{}: {:?}", domain.name(), s);
            assert!(s.get("validation").is_some_and(|v| v.documents > 0), "{}: no validation", domain.name());
        }
        let other = Corpus::assemble(&CorpusSpec { seed: 4, ..SMALL }).unwrap();
        assert_ne!(other.train, a.train, "another seed draws another corpus");
    }

    #[test]
    fn user_corpora_come_as_folders_or_jsonl() {
        let tmp = tempfile::tempdir().unwrap();
        for (domain, n) in [("prose", 30), ("code", 20)] {
            std::fs::create_dir_all(tmp.path().join(domain)).unwrap();
            for i in 0..n {
                std::fs::write(tmp.path().join(domain).join(format!("{i}.txt")), format!("{domain} document {i}\n"))
                    .unwrap();
            }
        }
        let rows: Vec<String> = (0..40)
            .map(|i| format!("{{\"domain\": \"math\", \"text\": \"1 + {i} = {}\", \"id\": {i}}}", i + 1))
            .collect();
        std::fs::write(tmp.path().join("extra.jsonl"), rows.join("\n")).unwrap();
        let c = Corpus::from_user(tmp.path(), 20).unwrap();
        let s = c.summary();
        let total = |d: &str| s[d].values().map(|t| t.documents).sum::<usize>();
        assert_eq!((total("prose"), total("code"), total("math")), (30, 20, 40));
        assert!(!c.validation.is_empty() && !c.train.is_empty());

        std::fs::write(tmp.path().join("bad.jsonl"), "{\"domain\": \"poetry\", \"text\": \"x\"}\n").unwrap();
        let err = format!("{:#}", Corpus::from_user(tmp.path(), 20).unwrap_err());
        assert!(err.contains("bad.jsonl: line 1") && err.contains("unknown domain `poetry`"), "{err}");
    }

    #[test]
    fn the_cache_returns_what_was_assembled() {
        let tmp = tempfile::tempdir().unwrap();
        let spec = CorpusSpec { bytes_per_domain: 50_000, ..SMALL };
        let first = Corpus::cached(&spec, tmp.path()).unwrap();
        let second = Corpus::cached(&spec, tmp.path()).unwrap();
        assert_eq!(first.train, second.train);
        assert_eq!(first.validation, second.validation);
    }
}
