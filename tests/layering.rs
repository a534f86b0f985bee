//! Dependencies between modules point one way: no import cycle, and nothing below the
//! server reaches up into it.
//!
//! Reads `src/**/*.rs` (not `main.rs`, `lib.rs` or `src/bin/`, which sit on top) and builds
//! the graph of module → module references from `crate::…` and `super::…` paths, at the
//! granularity of top-level modules, and of the files (or folders) inside the modules
//! listed in [`SPLIT`]. A name reached through a `pub use` in one of those `mod.rs`
//! files counts as a reference to the module that defines it, so a facade `mod.rs` does
//! not tie its children together. Comments and `#[cfg(test)] mod tests` blocks are left
//! out: a doc link or a unit test is not a dependency of the module.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// Modules whose files are nodes of their own. `telemetry` is split because its metrics
/// are a leaf every layer counts into, while its log set-up reads the settings.
const SPLIT: &[&str] = &["signaling", "auth", "store", "bus", "telemetry"];

/// Edges that close a cycle today and are being removed; each names why it is still here.
/// Keep this list short: a new entry needs a reason and an owner.
const ALLOWED: &[(&str, &str)] = &[];

/// One `module → module` reference, with where it was first seen.
type Graph = BTreeMap<String, BTreeMap<String, String>>;

#[test]
fn modules_form_no_import_cycle() {
    let graph = graph();
    let edges: usize = graph.values().map(BTreeMap::len).sum();
    // The crate has well over a hundred references between modules; a parser that stopped
    // finding them would make this test pass vacuously.
    assert!(
        edges >= 60,
        "only {edges} module references found; the layering check no longer reads the source"
    );
    for (from, to) in [
        ("signaling::connection", "signaling::link"),
        ("signaling::link", "signaling::commands"),
        ("server", "signaling::hub"),
        ("bus", "room"),
        ("store", "error"),
    ] {
        assert!(
            graph.get(from).is_some_and(|t| t.contains_key(to)),
            "expected the reference {from} -> {to}; the layering check misreads the source"
        );
    }
    let mut pruned = graph.clone();
    for (from, to) in ALLOWED {
        pruned.entry(from.to_string()).or_default().remove(*to);
    }
    // Files first, then whole modules: `store::memory` reaching into the hub closes no
    // cycle between files (the hub uses only `store`'s trait) but one between layers.
    for level in [pruned.clone(), top_level(&pruned)] {
        if let Some(cycle) = find_cycle(&level) {
            let steps: Vec<String> = cycle
                .windows(2)
                .map(|w| format!("  {} -> {}  ({})", w[0], w[1], level[&w[0]][&w[1]]))
                .collect();
            panic!(
                "import cycle between modules; break one of these references:\n{}",
                steps.join("\n")
            );
        }
    }
}

/// The graph between top-level modules (`signaling::hub` counts as `signaling`).
fn top_level(graph: &Graph) -> Graph {
    let top = |node: &str| node.split("::").next().unwrap_or(node).to_string();
    let mut collapsed = Graph::new();
    for (from, targets) in graph {
        for (to, at) in targets {
            if top(from) != top(to) {
                collapsed
                    .entry(top(from))
                    .or_default()
                    .entry(top(to))
                    .or_insert_with(|| at.clone());
            }
        }
    }
    collapsed
}

#[test]
fn nothing_below_the_server_imports_it() {
    let graph = graph();
    let into_server: Vec<String> = graph
        .iter()
        .filter_map(|(from, to)| to.get("server").map(|at| format!("  {from} ({at})")))
        .collect();
    assert!(
        into_server.is_empty(),
        "each HTTP service takes its own state; these modules import the server:\n{}",
        into_server.join("\n")
    );
}

/// The module graph of `src/`.
fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    collect(&src, &mut files);
    let files: Vec<(Vec<String>, String)> = files
        .into_iter()
        .filter_map(|path| {
            let module = module_path(&src, &path)?;
            let text = std::fs::read_to_string(&path).expect("source file is readable");
            Some((module, strip(&text)))
        })
        .collect();
    let layout = Layout {
        src: src.clone(),
        reexports: reexports(&files, &src),
    };
    let mut graph = Graph::new();
    for (module, text) in &files {
        let from = layout.node(module);
        for (line, path) in references(module, text) {
            let Some(to) = layout.resolve(&path) else {
                continue;
            };
            if to != from {
                let at = format!("{}:{line}", module.join("/"));
                graph
                    .entry(from.clone())
                    .or_default()
                    .entry(to)
                    .or_insert(at);
            }
        }
    }
    graph
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module a file defines (`src/signaling/hub/mod.rs` → `signaling::hub`); `None` for the
/// crate roots and binaries.
fn module_path(src: &Path, path: &Path) -> Option<Vec<String>> {
    let relative = path.strip_prefix(src).ok()?;
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if parts.first().is_some_and(|p| p == "bin") {
        return None;
    }
    let last = parts.pop()?;
    let stem = last.strip_suffix(".rs")?;
    // Unit tests kept in files of their own are not dependencies of the module either.
    if stem == "tests" || stem.ends_with("_tests") {
        return None;
    }
    if parts.is_empty() && (stem == "lib" || stem == "main") {
        return None;
    }
    if stem != "mod" {
        parts.push(stem.to_string());
    }
    Some(parts)
}

/// The source without comments and without its `#[cfg(test)] mod tests` block.
fn strip(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_block = false;
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]")
            && lines
                .peek()
                .is_some_and(|next| next.trim_start().starts_with("mod tests"))
        {
            break;
        }
        let mut kept = String::new();
        let mut rest = line;
        loop {
            if in_block {
                match rest.find("*/") {
                    Some(end) => {
                        rest = &rest[end + 2..];
                        in_block = false;
                    }
                    None => break,
                }
            } else {
                let line_comment = rest.find("//");
                let block = rest.find("/*");
                match (line_comment, block) {
                    (Some(l), b) if b.is_none_or(|b| l < b) => {
                        kept.push_str(&rest[..l]);
                        break;
                    }
                    (_, Some(b)) => {
                        kept.push_str(&rest[..b]);
                        rest = &rest[b + 2..];
                        in_block = true;
                    }
                    _ => {
                        kept.push_str(rest);
                        break;
                    }
                }
            }
        }
        out.push_str(&kept);
        out.push('\n');
    }
    out
}

/// Every absolute path (segments after the crate root) the text names through `crate::`
/// or `super::`, with its line number; `use` groups in braces are expanded.
fn references(module: &[String], text: &str) -> Vec<(usize, Vec<String>)> {
    let mut found = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let at_word_start = i == 0 || !is_ident(bytes[i - 1]) && bytes[i - 1] != b':';
        if !at_word_start {
            i += 1;
            continue;
        }
        let (base, consumed) = if bytes[i..].starts_with(b"crate::") {
            (Vec::new(), "crate::".len())
        } else if bytes[i..].starts_with(b"super::") {
            let mut base = module.to_vec();
            let mut j = i;
            while bytes[j..].starts_with(b"super::") {
                base.pop();
                j += "super::".len();
            }
            (base, j - i)
        } else {
            i += 1;
            continue;
        };
        let line = text[..i].matches('\n').count() + 1;
        let (paths, end) = parse_tree(text, i + consumed);
        for tail in paths {
            let mut path = base.clone();
            path.extend(tail);
            if !path.is_empty() {
                found.push((line, path));
            }
        }
        i = end.max(i + 1);
    }
    found
}

/// Parses `a::b::{c, d::e}` from `start`: the paths it names and where it ends.
fn parse_tree(text: &str, start: usize) -> (Vec<Vec<String>>, usize) {
    let bytes = text.as_bytes();
    let mut prefix = Vec::new();
    let mut i = start;
    loop {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i < bytes.len() && bytes[i] == b'{' {
            let mut paths = Vec::new();
            i += 1;
            loop {
                while i < bytes.len() && (bytes[i].is_ascii_whitespace() || bytes[i] == b',') {
                    i += 1;
                }
                if i >= bytes.len() || bytes[i] == b'}' {
                    return (paths, i + 1);
                }
                let (inner, end) = parse_tree(text, i);
                for tail in inner {
                    let mut path = prefix.clone();
                    path.extend(tail.into_iter().filter(|s| s != "self"));
                    paths.push(path);
                }
                // Skip what follows an item up to its separator (`as alias`).
                i = end;
                while i < bytes.len() && bytes[i] != b',' && bytes[i] != b'}' {
                    i += 1;
                }
            }
        }
        let word_start = i;
        while i < bytes.len() && (is_ident(bytes[i]) || bytes[i] == b'*') {
            i += 1;
        }
        if i == word_start {
            return (vec![prefix], i);
        }
        prefix.push(text[word_start..i].to_string());
        if bytes[i..].starts_with(b"::") {
            i += 2;
        } else {
            return (vec![prefix], i);
        }
    }
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Where the graph's nodes are, and what the split modules re-export.
struct Layout {
    src: PathBuf,
    /// For each split module, the names its `mod.rs` re-exports and the node defining them.
    reexports: HashMap<String, HashMap<String, String>>,
}

impl Layout {
    /// The node a module belongs to.
    fn node(&self, module: &[String]) -> String {
        match module {
            [top, child, ..] if self.is_split_child(top, child) => format!("{top}::{child}"),
            [top, ..] => top.clone(),
            [] => String::new(),
        }
    }

    fn is_split_child(&self, top: &str, child: &str) -> bool {
        SPLIT.contains(&top)
            && (self.src.join(top).join(format!("{child}.rs")).is_file()
                || self.src.join(top).join(child).is_dir())
    }

    /// The node an absolute path lands in; `None` outside the crate's modules.
    fn resolve(&self, path: &[String]) -> Option<String> {
        let top = path.first()?;
        let is_module = self.src.join(format!("{top}.rs")).is_file() || self.src.join(top).is_dir();
        if !is_module {
            return None;
        }
        if let Some(child) = path.get(1) {
            if self.is_split_child(top, child) {
                return Some(format!("{top}::{child}"));
            }
            if let Some(node) = self.reexports.get(top).and_then(|r| r.get(child)) {
                return Some(node.clone());
            }
        }
        Some(top.clone())
    }
}

/// The `pub use` lines of each split module's `mod.rs`: name → node defining it.
fn reexports(
    files: &[(Vec<String>, String)],
    src: &Path,
) -> HashMap<String, HashMap<String, String>> {
    let bare = Layout {
        src: src.to_path_buf(),
        reexports: HashMap::new(),
    };
    let mut all = HashMap::new();
    for (module, text) in files {
        let [top] = module.as_slice() else {
            continue;
        };
        if !SPLIT.contains(&top.as_str()) {
            continue;
        }
        let mut names = HashMap::new();
        for statement in text.split(';') {
            let Some(at) = statement.find("pub use ") else {
                continue;
            };
            let rest = &statement[at + "pub use ".len()..];
            let (paths, _) = parse_tree(rest, 0);
            for path in paths {
                let Some(name) = path.last().cloned() else {
                    continue;
                };
                let absolute: Vec<String> = match path.first().map(String::as_str) {
                    Some("crate") => path[1..].to_vec(),
                    Some("super") => path[1..].to_vec(),
                    Some("self") => std::iter::once(top.clone())
                        .chain(path[1..].iter().cloned())
                        .collect(),
                    _ => std::iter::once(top.clone()).chain(path).collect(),
                };
                if let Some(node) = bare.resolve(&absolute) {
                    names.insert(name, node);
                }
            }
        }
        all.insert(top.clone(), names);
    }
    all
}

/// A cycle in `graph`, as the list of its nodes with the first repeated at the end.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        node: &str,
        graph: &Graph,
        marks: &mut HashMap<String, Mark>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        marks.insert(node.to_string(), Mark::Open);
        stack.push(node.to_string());
        let empty = BTreeMap::new();
        for next in graph.get(node).unwrap_or(&empty).keys() {
            match marks.get(next.as_str()) {
                Some(Mark::Open) => {
                    let from = stack.iter().position(|n| n == next).expect("on the stack");
                    let mut cycle = stack[from..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Some(Mark::Done) => {}
                None => {
                    if let Some(cycle) = visit(next, graph, marks, stack) {
                        return Some(cycle);
                    }
                }
            }
        }
        stack.pop();
        marks.insert(node.to_string(), Mark::Done);
        None
    }
    let nodes: BTreeSet<&String> = graph.keys().collect();
    let mut marks = HashMap::new();
    for node in nodes {
        if !marks.contains_key(node.as_str())
            && let Some(cycle) = visit(node, graph, &mut marks, &mut Vec::new())
        {
            return Some(cycle);
        }
    }
    None
}

/// Prints the graph (`cargo test --test layering -- --ignored --nocapture`), for reading
/// the layering or updating the crate doc.
#[test]
#[ignore]
fn print_the_module_graph() {
    for (from, to) in graph() {
        let targets: Vec<&str> = to.keys().map(String::as_str).collect();
        println!("{from} -> {}", targets.join(", "));
    }
}
