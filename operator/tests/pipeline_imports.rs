//! The operator's source reads one way: observe -> validate -> build -> apply -> status, and
//! the controller that runs them last (docs/architecture.md, "The operator").
//!
//! Read from the files themselves (every `crate::` and `super::` path, in `use` lines and
//! inline): a module of a pipeline step imports nothing from a later step, and no file imports
//! itself back through others (no cycle between files).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every top-level module of `src/`, by rank: a module may import only modules of its rank
/// or lower. Rank 0 is what every step may use (the resource's types, names, helpers that
/// know nothing of the pipeline); 1 to 5 are the steps; 6 runs them.
const RANKS: &[(&str, u8)] = &[
    ("crd", 0),
    ("names", 0),
    ("yaml", 0),
    ("metrics", 0),
    ("http", 0),
    ("watch", 0),
    ("foreign", 0),
    ("observe", 1),
    ("validate", 2),
    ("build", 3),
    ("apply", 4),
    ("status", 5),
    ("controller", 6),
    ("rbac", 6),
    ("generate", 6),
];

/// The module path of a file: `src/validate/model.rs` -> `["validate", "model"]`.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = relative
        .components()
        .map(|part| part.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|last| last == "mod") {
        parts.pop();
    }
    parts
}

fn rust_files(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, files);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
}

/// The source without comments, so a path named in a doc comment is not an import.
fn code_of(source: &str) -> String {
    source
        .lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The module paths a file's code names: `crate::a::b`, `super::c`, `self::d`, and each item
/// of a `use` group (`crate::a::{b, c::d}` names `a::b` and `a::c::d`).
fn imports(code: &str, module: &[String]) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    for start in ["crate::", "super::", "self::"] {
        let mut rest = code;
        while let Some(at) = rest.find(start) {
            let before = rest[..at].chars().last();
            rest = &rest[at + start.len()..];
            // `$crate::` in a macro, or the end of a longer identifier.
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
                continue;
            }
            let base: Vec<String> = match start {
                "crate::" => Vec::new(),
                "self::" => module.to_vec(),
                // `super` of `a/b.rs` and of `a/b/mod.rs` (both module `a::b`) is `a`.
                _ => module[..module.len().saturating_sub(1)].to_vec(),
            };
            for path in paths(rest) {
                let mut full = base.clone();
                full.extend(path);
                found.push(full);
            }
        }
    }
    found
}

/// The paths at the start of `text` (after `crate::`): one, or one per item of a group.
fn paths(text: &str) -> Vec<Vec<String>> {
    let head: String = text
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
        .collect();
    let prefix: Vec<String> = head
        .split("::")
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let after = &text[head.len()..];
    if !(head.is_empty() || head.ends_with("::")) || !after.starts_with('{') {
        return vec![prefix];
    }
    // The group, up to its matching brace; items split at top-level commas.
    let mut depth = 0;
    let mut items = vec![String::new()];
    for c in after.chars() {
        match c {
            '{' => {
                depth += 1;
                if depth == 1 {
                    continue;
                }
            }
            '}' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            ',' if depth == 1 => {
                items.push(String::new());
                continue;
            }
            _ => {}
        }
        items.last_mut().unwrap().push(c);
    }
    items
        .iter()
        .map(|item| item.trim())
        .filter(|item| !item.is_empty())
        .flat_map(paths)
        .map(|path| {
            let mut full = prefix.clone();
            full.extend(path.into_iter().filter(|s| s != "self"));
            full
        })
        .collect()
}

struct Source {
    files: BTreeMap<Vec<String>, PathBuf>,
    edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
}

fn read_source() -> Source {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    rust_files(&src, &mut paths);
    // The binaries are their own crates (they import the library by name, not `crate::`).
    paths.retain(|path| {
        let module = module_of(&src, path);
        module != ["main"] && module.first().is_none_or(|first| first != "bin")
    });
    let files: BTreeMap<Vec<String>, PathBuf> = paths
        .iter()
        .map(|path| (module_of(&src, path), path.clone()))
        .collect();
    let mut edges = BTreeMap::new();
    for (module, path) in &files {
        let source = std::fs::read_to_string(path).unwrap();
        // Unit tests may reach anywhere; they are not part of the pipeline.
        let code = match source.find("#[cfg(test)]\nmod tests") {
            Some(at) => &source[..at],
            None => &source,
        };
        let targets: BTreeSet<Vec<String>> = imports(&code_of(code), module)
            .into_iter()
            .filter_map(|path| {
                // The longest prefix that is a file: the module imported from.
                (1..=path.len())
                    .rev()
                    .map(|len| path[..len].to_vec())
                    .find(|prefix| files.contains_key(prefix))
            })
            .filter(|target| target != module)
            .collect();
        edges.insert(module.clone(), targets);
    }
    Source { files, edges }
}

fn rank(module: &[String]) -> u8 {
    let top = module.first().map(String::as_str).unwrap_or("lib");
    if top == "lib" {
        // lib.rs declares every module and generates the CRD from `crd`.
        return u8::MAX;
    }
    RANKS
        .iter()
        .find(|(name, _)| *name == top)
        .unwrap_or_else(|| panic!("module {top} has no rank in this test: give it one"))
        .1
}

#[test]
fn no_step_imports_a_later_one() {
    let source = read_source();
    let mut backward = Vec::new();
    for (module, targets) in &source.edges {
        for target in targets {
            if rank(target) > rank(module) {
                backward.push(format!("{} -> {}", module.join("::"), target.join("::")));
            }
        }
    }
    assert!(
        backward.is_empty(),
        "imports from a later step: {backward:#?}"
    );
    // The test reads what it claims to: the steps import one another.
    let edge = |from: &str, to: &str| {
        source
            .edges
            .iter()
            .any(|(module, targets)| module[0] == from && targets.iter().any(|t| t[0] == to))
    };
    assert!(edge("validate", "observe") && edge("build", "validate") && edge("status", "apply"));
    assert!(source.files.len() > 30, "{}", source.files.len());
}

#[test]
fn no_file_imports_itself_back() {
    let source = read_source();
    // Depth-first search for a back edge.
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    fn visit(
        module: &Vec<String>,
        edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        marks: &mut BTreeMap<Vec<String>, Mark>,
        stack: &mut Vec<Vec<String>>,
        cycles: &mut Vec<String>,
    ) {
        marks.insert(module.clone(), Mark::Open);
        stack.push(module.clone());
        for target in edges.get(module).into_iter().flatten() {
            match marks.get(target).copied().unwrap_or(Mark::New) {
                Mark::New => visit(target, edges, marks, stack, cycles),
                Mark::Open => {
                    let from = stack.iter().position(|m| m == target).unwrap();
                    let cycle: Vec<String> = stack[from..]
                        .iter()
                        .chain([target])
                        .map(|m| m.join("::"))
                        .collect();
                    cycles.push(cycle.join(" -> "));
                }
                Mark::Done => {}
            }
        }
        stack.pop();
        marks.insert(module.clone(), Mark::Done);
    }
    let mut marks = BTreeMap::new();
    let mut cycles = Vec::new();
    for module in source.edges.keys() {
        if marks.get(module).copied().unwrap_or(Mark::New) == Mark::New {
            visit(
                module,
                &source.edges,
                &mut marks,
                &mut Vec::new(),
                &mut cycles,
            );
        }
    }
    assert!(cycles.is_empty(), "import cycles: {cycles:#?}");
}
