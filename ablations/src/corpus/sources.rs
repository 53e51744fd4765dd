//! Where the default corpus comes from, with no download: text already on any machine
//! that built v3lab. Prose: the Markdown documentation of the crates in the cargo registry
//! and, when the toolchain ships its docs, the Rust book and reference (HTML stripped to
//! text). Code: the Rust sources of those crates.

use super::{Document, Domain};
use std::path::{Path, PathBuf};

/// Largest piece of one file kept as a document: long sources are cut at line boundaries.
const MAX_DOCUMENT_BYTES: usize = 16 * 1024;
/// Shorter pieces carry too little to learn from.
const MIN_DOCUMENT_BYTES: usize = 128;

/// `$CARGO_HOME/registry/src/*` (default `~/.cargo`): one folder per crate version.
pub fn registry_crates() -> Vec<PathBuf> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    let Some(src) = home.map(|h| h.join("registry").join("src")) else { return Vec::new() };
    let mut crates: Vec<PathBuf> =
        read_dir_sorted(&src).into_iter().flat_map(|index| read_dir_sorted(&index)).collect();
    crates.retain(|p| p.is_dir());
    crates
}

/// The toolchain's HTML book and reference, if it ships its docs.
pub fn toolchain_docs() -> Vec<PathBuf> {
    let Ok(out) = std::process::Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .args(["--print", "sysroot"])
        .output()
    else {
        return Vec::new();
    };
    let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let html = sysroot.join("share/doc/rust/html");
    let mut files = Vec::new();
    // Top-level chapters only: the subfolders hold old editions' redirect stubs.
    for book in ["book", "reference"] {
        files.extend(files_with(&html.join(book), "html", 0));
    }
    files
}

fn read_dir_sorted(dir: &Path) -> Vec<PathBuf> {
    let mut entries: Vec<PathBuf> =
        std::fs::read_dir(dir).map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect()).unwrap_or_default();
    entries.sort();
    entries
}

/// Files under `dir` ending in `.ext`, at most `depth` folders down, sorted.
pub fn files_with(dir: &Path, ext: &str, depth: usize) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in read_dir_sorted(dir) {
        if entry.is_dir() && depth > 0 {
            out.extend(files_with(&entry, ext, depth - 1));
        } else if entry.extension().is_some_and(|e| e.eq_ignore_ascii_case(ext)) {
            out.push(entry);
        }
    }
    out
}

/// The crate's name without its version (`rand-0.9.5` → `rand`), so that versions of one
/// file share a split.
fn crate_name(dir: &Path) -> String {
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    match name.rsplit_once('-') {
        Some((base, version)) if version.starts_with(|c: char| c.is_ascii_digit()) => base.to_string(),
        _ => name,
    }
}

/// Cuts `text` into documents of at most `MAX_DOCUMENT_BYTES` at line boundaries.
fn pieces(text: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    for line in text.split_inclusive('\n') {
        if out.last().unwrap().len() + line.len() > MAX_DOCUMENT_BYTES && !out.last().unwrap().is_empty() {
            out.push(String::new());
        }
        out.last_mut().unwrap().push_str(line);
    }
    out.retain(|p| p.len() >= MIN_DOCUMENT_BYTES);
    out
}

/// The documents of one source file: `key` identifies it across crate versions.
pub fn documents_of(domain: Domain, key: &str, text: &str) -> Vec<Document> {
    let text = if domain == Domain::Prose && key.ends_with(".html") { strip_html(text) } else { text.to_string() };
    pieces(&text)
        .into_iter()
        .enumerate()
        .map(|(i, piece)| Document { domain, key: format!("{key}#{i}"), text: piece })
        .collect()
}

/// Every candidate prose and code file: (domain, split key, path).
pub fn candidates() -> Vec<(Domain, String, PathBuf)> {
    let mut out = Vec::new();
    for dir in registry_crates() {
        let name = crate_name(&dir);
        for md in files_with(&dir, "md", 2) {
            let rel = md.strip_prefix(&dir).unwrap_or(&md).display().to_string();
            out.push((Domain::Prose, format!("{name}/{rel}"), md));
        }
        for rs in files_with(&dir.join("src"), "rs", 6) {
            let rel = rs.strip_prefix(&dir).unwrap_or(&rs).display().to_string();
            out.push((Domain::Code, format!("{name}/{rel}"), rs));
        }
    }
    for html in toolchain_docs() {
        let key =
            html.components().rev().take(2).map(|c| c.as_os_str().to_string_lossy().into_owned()).collect::<Vec<_>>();
        out.push((Domain::Prose, format!("rust-docs/{}/{}", key[1], key[0]), html));
    }
    out
}

/// The text of an HTML page: the `<main>` element when there is one, without scripts,
/// styles and tags, with the common entities decoded and blank runs collapsed.
pub fn strip_html(html: &str) -> String {
    let body = match (html.find("<main"), html.rfind("</main>")) {
        (Some(a), Some(b)) if a < b => &html[a..b],
        _ => html,
    };
    let mut text = String::with_capacity(body.len() / 2);
    let mut rest = body;
    while let Some(open) = rest.find('<') {
        text.push_str(&rest[..open]);
        let tag = &rest[open..];
        let head = tag.get(1..10).unwrap_or("").to_ascii_lowercase();
        let skip_to = ["script", "style", "noscript"]
            .iter()
            .find_map(|t| head.starts_with(t).then(|| tag.find(&format!("</{t}>")).map(|e| e + t.len() + 3)));
        let end = match skip_to {
            Some(Some(end)) => end,
            _ => tag.find('>').map_or(tag.len(), |e| e + 1),
        };
        let name = head.trim_start_matches('/');
        if ["p", "br", "div", "h1", "h2", "h3", "h4", "li", "pre", "tr"].iter().any(|b| name.starts_with(b)) {
            text.push('\n');
        }
        rest = &tag[end..];
    }
    text.push_str(rest);
    let decoded = text
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&nbsp;", " ")
        .replace("&amp;", "&");
    let mut out = String::new();
    let mut blank = 0;
    for line in decoded.lines().map(str::trim_end) {
        blank = if line.trim().is_empty() { blank + 1 } else { 0 };
        if blank < 2 {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_becomes_text() {
        let html = "<html><head><style>p{}</style></head><body><main><h1>Ownership</h1><script>x()</script>\
                    <p>Each value has an <code>owner</code> &amp; a scope &lt;&#39;a&gt;.</p></main></body></html>";
        let text = strip_html(html);
        assert!(text.contains("Ownership"));
        assert!(text.contains("Each value has an owner & a scope <'a>."), "{text}");
        assert!(!text.contains("x()") && !text.contains("p{}") && !text.contains('<') || text.contains("<'a>"));
    }

    #[test]
    fn versions_of_a_crate_share_a_name() {
        assert_eq!(crate_name(Path::new("/r/rand-0.9.5")), "rand");
        assert_eq!(crate_name(Path::new("/r/rand_distr-0.5.1")), "rand_distr");
        assert_eq!(crate_name(Path::new("/r/wasm-bindgen-0.2.1")), "wasm-bindgen");
    }

    #[test]
    fn long_files_are_cut_at_lines() {
        let text = "fn line() {}\n".repeat(5000);
        let docs = documents_of(Domain::Code, "k/src/lib.rs", &text);
        assert!(docs.len() > 1 && docs.iter().all(|d| d.text.len() <= MAX_DOCUMENT_BYTES && d.text.ends_with('\n')));
        assert_eq!(docs.iter().map(|d| d.text.len()).sum::<usize>(), text.len());
    }
}
