//! ARCHITECTURE.md's structural invariants, checked on the sources: the
//! binary only parses the command line and starts roles (at most 1,500
//! lines), and no module of any crate imports a module that imports it back.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{ensure, Result};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            rust_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

#[test]
fn the_binary_only_wires_roles_in_at_most_1500_lines() -> Result<()> {
    let mut files = Vec::new();
    rust_files(&workspace().join("crates/respawn/src"), &mut files)?;
    let mut lines = 0;
    for file in &files {
        lines += std::fs::read_to_string(file)?.lines().count();
    }
    ensure!(lines <= 1_500, "crates/respawn/src has {lines} lines: move what is not command-line wiring to a library");
    Ok(())
}

/// A crate's modules (`a::b`) and the modules each one names through `crate::` or `super::`.
fn module_imports(src: &Path) -> Result<BTreeMap<String, BTreeSet<String>>> {
    let mut files = Vec::new();
    rust_files(src, &mut files)?;
    let mut sources = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(src)?.with_extension("");
        let mut parts: Vec<String> = relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
        if parts.last().is_some_and(|p| p == "mod" || p == "lib" || p == "main") {
            parts.pop();
        }
        let text = std::fs::read_to_string(&file)?;
        // Tests may import anything of their parent; comments name modules without importing them.
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        let code: String =
            code.lines().map(|l| l.split("//").next().unwrap_or_default()).collect::<Vec<_>>().join("\n");
        sources.insert(parts.join("::"), code);
    }
    let modules: BTreeSet<String> = sources.keys().cloned().collect();
    let mut imports = BTreeMap::new();
    for (module, code) in &sources {
        let mut named = BTreeSet::new();
        let parent = module.rsplit_once("::").map_or("", |(p, _)| p);
        for (prefix, base) in [("crate::", ""), ("super::", parent)] {
            for (i, _) in code.match_indices(prefix) {
                let path: String = code[i + prefix.len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == ':')
                    .collect();
                let segments: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
                // The longest prefix of the path that is a module of this crate.
                let target = (1..=segments.len()).rev().find_map(|n| {
                    let candidate = segments[..n].join("::");
                    let candidate = if base.is_empty() { candidate } else { format!("{base}::{candidate}") };
                    modules.contains(&candidate).then_some(candidate)
                });
                if let Some(target) = target {
                    let related = target == *module
                        || module.starts_with(&format!("{target}::"))
                        || target.starts_with(&format!("{module}::"));
                    if !related {
                        named.insert(target);
                    }
                }
            }
        }
        imports.insert(module.clone(), named);
    }
    Ok(imports)
}

#[test]
fn no_module_imports_a_module_that_imports_it_back() -> Result<()> {
    let mut circles = Vec::new();
    for entry in std::fs::read_dir(workspace().join("crates"))? {
        let krate = entry?.path();
        let imports = module_imports(&krate.join("src"))?;
        // Reachability from each module; a module that reaches itself is in a circle.
        for start in imports.keys() {
            let mut seen = BTreeSet::new();
            let mut todo: Vec<&String> = imports[start].iter().collect();
            while let Some(next) = todo.pop() {
                if next == start {
                    circles.push(format!("{}: {start}", krate.file_name().unwrap_or_default().to_string_lossy()));
                    break;
                }
                if seen.insert(next.clone()) {
                    todo.extend(imports.get(next).into_iter().flatten());
                }
            }
        }
    }
    ensure!(circles.is_empty(), "modules in an import circle: {circles:?}");
    Ok(())
}
