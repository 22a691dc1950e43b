//! The layers of `src/`, checked: every `crate::` path in library code must name its own layer or
//! one below it, never a sibling on the same rank, and no two modules may import each other in a
//! circle. Reads the source as text, as rust-analyzer's tidy tests do, so a forbidden import is a
//! red build naming the file, the line and the `use`, not a review comment.
//!
//! Test code (`#[cfg(test)] mod … { … }`) is left out: a unit test may build whatever it needs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, bottom up: a layer may import only layers of a lower rank (and itself).
const LAYERS: &[(&str, u8)] = &[
    ("domain", 0),
    ("config", 1),
    ("atomic_file", 1),
    ("store", 2),
    ("trust", 2),
    ("runtime", 3),
    ("peer", 4),
    ("desk", 4),
    ("rpc", 5),
    ("console", 5),
    ("node", 6),
    ("cli", 7),
];

/// Items of the crate root that every layer may use: the generated wire and store types.
const ROOT_ITEMS: &[&str] = &["proto", "store_proto", "FILE_DESCRIPTOR_SET"];

fn rank(layer: &str) -> Option<u8> {
    LAYERS.iter().find(|(name, _)| *name == layer).map(|(_, rank)| *rank)
}

/// One import that breaks the layering.
#[derive(Debug, PartialEq)]
struct Violation {
    file: String,
    line: usize,
    text: String,
    why: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: `{}` {}", self.file, self.line, self.text, self.why)
    }
}

/// The source with `#[cfg(test)] mod name { … }` blocks and comments blanked out (line numbers
/// kept, so violations point at the real line).
fn library_code(source: &str) -> String {
    let mut code = String::with_capacity(source.len());
    for line in source.lines() {
        let without_comment = match line.find("//") {
            Some(at) if !line[..at].contains('"') => &line[..at],
            _ => line,
        };
        code.push_str(without_comment);
        code.push('\n');
    }
    let mut out = String::with_capacity(code.len());
    let mut rest = code.as_str();
    while let Some(at) = rest.find("#[cfg(test)]") {
        let after = &rest[at + "#[cfg(test)]".len()..];
        let trimmed = after.trim_start();
        let is_module = trimmed.starts_with("mod ") || trimmed.starts_with("pub mod ");
        let Some(open) = after.find('{').filter(|_| is_module) else {
            out.push_str(&rest[..at + "#[cfg(test)]".len()]);
            rest = after;
            continue;
        };
        out.push_str(&rest[..at]);
        let mut depth = 0usize;
        let mut end = after.len();
        for (i, c) in after[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        // Blank the block but keep its newlines.
        out.extend(rest[at..at + "#[cfg(test)]".len() + end].chars().filter(|c| *c == '\n'));
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// Every `crate::` path in `code` as (line, the path's segments), grouped imports
/// (`use crate::{a::B, c}`) expanded to one path per group member.
fn crate_paths(code: &str) -> Vec<(usize, Vec<String>)> {
    let mut paths = Vec::new();
    let bytes = code.as_bytes();
    let mut search = 0;
    while let Some(found) = code[search..].find("crate::") {
        let at = search + found;
        search = at + "crate::".len();
        // `$crate::` and `hanoi247crate::` are not ours.
        if at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_' || bytes[at - 1] == b'$')
        {
            continue;
        }
        let line = code[..at].matches('\n').count() + 1;
        let rest = &code[search..];
        if let Some(group) = rest.strip_prefix('{') {
            let inner = &group[..group.find('}').unwrap_or(group.len())];
            for member in inner.split(',') {
                let segments = segments_of(member.trim());
                if !segments.is_empty() {
                    paths.push((line, segments));
                }
            }
        } else {
            let segments = segments_of(rest);
            if !segments.is_empty() {
                paths.push((line, segments));
            }
        }
    }
    paths
}

fn segments_of(text: &str) -> Vec<String> {
    let mut segments = Vec::new();
    let mut rest = text;
    loop {
        let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
        if end == 0 {
            break;
        }
        segments.push(rest[..end].to_owned());
        match rest[end..].strip_prefix("::") {
            Some(next) => rest = next,
            None => break,
        }
    }
    segments
}

/// The layer a file of `src/` belongs to (`src/store/events.rs` → `store`, `src/config.rs` →
/// `config`); `None` for the crate root and the binary.
fn layer_of(relative: &Path) -> Option<String> {
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib" && name != "main").then(|| name.to_owned())
}

/// The module a file defines (`store/events.rs` → `store::events`, `store/mod.rs` → `store`).
fn module_of(relative: &Path) -> String {
    let text = relative.with_extension("").to_string_lossy().replace('/', "::");
    text.strip_suffix("::mod").map(str::to_owned).unwrap_or(text)
}

/// The layering violations of one file.
fn check_file(file: &str, layer: &str, source: &str) -> Vec<Violation> {
    let Some(own) = rank(layer) else {
        return vec![Violation {
            file: file.to_owned(),
            line: 1,
            text: layer.to_owned(),
            why: "is a folder of src/ that is not a layer: add it to LAYERS (and to ARCHITECTURE.md)".into(),
        }];
    };
    let mut violations = Vec::new();
    for (line, segments) in crate_paths(&library_code(source)) {
        let target = segments[0].as_str();
        if target == layer || ROOT_ITEMS.contains(&target) || target == "self" {
            continue;
        }
        let text = format!("crate::{}", segments.join("::"));
        let why = match rank(target) {
            None => format!("names `{target}`, which is not a layer"),
            Some(theirs) if theirs > own => {
                format!("runs up the layers: {layer} (rank {own}) may not import {target} (rank {theirs})")
            }
            Some(theirs) if theirs == own => {
                format!(
                    "crosses to a sibling: {layer} and {target} share rank {own} and must not import each other"
                )
            }
            Some(_) => continue,
        };
        violations.push(Violation { file: file.to_owned(), line, text, why });
    }
    violations
}

/// Each `.rs` file under `dir`, with its path relative to `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    files.sort();
    files
}

/// Import circles between modules: each strongly connected group of more than one module, by
/// the `crate::` paths of library code (a child naming its own parent module does not count:
/// that is Rust's module tree, not an import circle).
fn circles(imports: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    // Tarjan's algorithm, iteratively small enough to write recursively for a few dozen modules.
    struct Walk<'a> {
        imports: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(walk: &mut Walk<'a>, module: &'a str) {
        let n = walk.index.len();
        walk.index.insert(module, n);
        walk.low.insert(module, n);
        walk.stack.push(module);
        for next in walk.imports.get(module).into_iter().flatten() {
            let next = next.as_str();
            if !walk.imports.contains_key(next) {
                continue;
            }
            if !walk.index.contains_key(next) {
                visit(walk, next);
                let low = walk.low[module].min(walk.low[next]);
                walk.low.insert(module, low);
            } else if walk.stack.contains(&next) {
                let low = walk.low[module].min(walk.index[next]);
                walk.low.insert(module, low);
            }
        }
        if walk.low[module] == walk.index[module] {
            let mut group = Vec::new();
            while let Some(member) = walk.stack.pop() {
                group.push(member.to_owned());
                if member == module {
                    break;
                }
            }
            if group.len() > 1 {
                group.sort();
                walk.found.push(group);
            }
        }
    }
    let mut walk =
        Walk { imports, index: BTreeMap::new(), low: BTreeMap::new(), stack: Vec::new(), found: Vec::new() };
    for module in imports.keys() {
        if !walk.index.contains_key(module.as_str()) {
            visit(&mut walk, module);
        }
    }
    walk.found
}

/// Which modules each module's library code names, resolved to the longest module path known.
fn module_imports(sources: &[(String, String)]) -> BTreeMap<String, BTreeSet<String>> {
    let modules: BTreeSet<&str> = sources.iter().map(|(module, _)| module.as_str()).collect();
    let mut imports = BTreeMap::new();
    for (module, source) in sources {
        let mut named = BTreeSet::new();
        for (_, segments) in crate_paths(&library_code(source)) {
            let target = (1..=segments.len())
                .rev()
                .map(|n| segments[..n].join("::"))
                .find(|candidate| modules.contains(candidate.as_str()));
            if let Some(target) = target {
                let is_ancestor = module.starts_with(&format!("{target}::"));
                if target != *module && !is_ancestor {
                    named.insert(target);
                }
            }
        }
        imports.insert(module.clone(), named);
    }
    imports
}

#[test]
fn imports_run_down_the_layers_and_never_in_a_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut violations = Vec::new();
    let mut sources = Vec::new();
    for relative in rust_files(&src) {
        let source = std::fs::read_to_string(src.join(&relative)).unwrap();
        let file = format!("src/{}", relative.display());
        if let Some(layer) = layer_of(&relative) {
            violations.extend(check_file(&file, &layer, &source));
        }
        sources.push((module_of(&relative), source));
    }
    let report: Vec<String> = violations.iter().map(ToString::to_string).collect();
    assert!(report.is_empty(), "imports that break the layering:\n{}", report.join("\n"));
    let circles = circles(&module_imports(&sources));
    assert!(circles.is_empty(), "modules that import each other in a circle: {circles:?}");
    // The check saw the real tree, not an empty or moved one.
    assert!(sources.len() > 30, "only {} files found under {}", sources.len(), src.display());
}

#[test]
fn an_import_that_runs_up_a_layer_is_named() {
    let source = "//! A store module.\nuse crate::store::Store;\nuse crate::domain::identity::NodeCode;\n\
                  use crate::desk::service::DeskError;\n";
    let violations = check_file("src/store/fixture.rs", "store", source);
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert_eq!(violations[0].line, 4);
    assert_eq!(violations[0].text, "crate::desk::service::DeskError");
    assert!(violations[0].why.contains("runs up the layers"), "{}", violations[0]);
}

#[test]
fn grouped_inline_and_sibling_imports_are_named_and_test_modules_are_not() {
    let source = "use crate::{domain::lifecycle, trust::tls::Dial};\n\
                  fn f() { let _ = crate::node::SOFTWARE_VERSION; }\n\
                  // crate::cli in a comment is not an import\n\
                  #[cfg(test)]\nmod tests {\n    use crate::cli::init;\n    fn g() { if true { } }\n}\n\
                  fn h() { crate::proto::Envelope::default(); }\n";
    let violations = check_file("src/store/fixture.rs", "store", source);
    let texts: Vec<&str> = violations.iter().map(|v| v.text.as_str()).collect();
    assert_eq!(texts, ["crate::trust::tls::Dial", "crate::node::SOFTWARE_VERSION"], "{violations:?}");
    assert!(violations[0].why.contains("sibling"), "{}", violations[0]);
    assert_eq!(violations[1].line, 2);
}

#[test]
fn an_import_circle_is_found() {
    let sources = vec![
        ("peer::a".to_owned(), "use crate::peer::b::X;".to_owned()),
        ("peer::b".to_owned(), "use crate::peer::c::Y;".to_owned()),
        ("peer::c".to_owned(), "use crate::peer::a::Z;".to_owned()),
        ("peer".to_owned(), "pub mod a; use crate::peer::a::Z;".to_owned()),
        ("peer::d".to_owned(), "use crate::peer::Thing;".to_owned()),
    ];
    assert_eq!(circles(&module_imports(&sources)), vec![vec!["peer::a", "peer::b", "peer::c"]]);
}
