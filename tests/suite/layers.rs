//! The library's layering, read from its own source: every module imports only modules below
//! it (see ARCHITECTURE.md), and every file opens with a `//!` header saying what it is for.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The layers from the bottom up; a module may name (`crate::x`) only modules of lower layers.
const LAYERS: &[&[&str]] = &[
    &["error"],
    &[
        "config", "seed", "atomic", "alloc", "timing", "progress", "counts",
    ],
    &["kernels"],
    &["ops"],
    &["model", "optim", "data", "device", "dist", "layout"],
    &["planner"],
    &["checkpoint", "export", "import"],
    &["viz", "eval", "tensorboard"],
    &["train"],
    &["bench", "cli"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of `src/` belongs to (`None` for `lib.rs` and `main.rs`).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    let name = first.strip_suffix(".rs").unwrap_or(&first).to_string();
    (name != "lib" && name != "main").then_some(name)
}

/// The top-level modules a file names through `crate::`, outside comments.
fn named_modules(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

#[test]
fn no_module_imports_one_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut problems = Vec::new();
    let mut modules = BTreeSet::new();
    for file in &files {
        let Some(module) = module_of(&src, file) else {
            continue;
        };
        let Some(layer) = layer_of(&module) else {
            problems.push(format!("{module} ({}) is in no layer", file.display()));
            continue;
        };
        modules.insert(module.clone());
        let text = std::fs::read_to_string(file).unwrap();
        for named in named_modules(&text) {
            if named == module {
                continue;
            }
            match layer_of(&named) {
                Some(l) if l < layer => {}
                _ => problems.push(format!(
                    "{} ({module}, layer {layer}) names crate::{named} (layer {:?})",
                    file.strip_prefix(&src).unwrap().display(),
                    layer_of(&named)
                )),
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // Every layer's modules exist: the table is not stale.
    for module in LAYERS.iter().flat_map(|l| l.iter()) {
        assert!(modules.contains(*module), "no module {module} in src/");
    }
}

#[test]
fn every_file_says_what_it_is_for() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["src", "web/src"] {
        rust_files(&root.join(dir), &mut files);
    }
    let missing: Vec<String> = files
        .iter()
        .filter(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            !text.trim_start().starts_with("//!")
        })
        .map(|f| f.strip_prefix(root).unwrap().display().to_string())
        .collect();
    assert!(missing.is_empty(), "no //! header: {missing:?}");
}
