//! The layers of the crate, checked by a test: a module imports only modules of lower
//! layers, so the import graph has no cycles and reads top to bottom as
//! `docs/architecture.md` draws it.

/// Each top-level module and its layer; a module may use modules of lower layers only.
pub const LAYERS: &[(&str, u8)] = &[
    // the pure core
    ("code", 0),
    ("clock", 0),
    ("script", 0),
    ("tempurl", 1),
    ("node", 1),
    ("ring", 1),
    ("ipxe", 2),
    ("config", 3),
    // I/O adapters
    ("metrics", 4),
    ("images", 4),
    ("store", 4),
    ("mirror", 4),
    // the boot interface and the domain's operations
    ("boot", 5),
    ("service", 6),
    // the drivers: requests and timers
    ("server", 7),
    ("conductor", 7),
    // the composition root
    ("cli", 8),
];

#[cfg(test)]
mod tests {
    use super::LAYERS;
    use std::path::Path;

    fn layer(module: &str) -> Option<u8> {
        LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
    }

    fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// `crate::x` references in a file's text, with `use crate::{a, b}` expanded.
    fn crate_refs(text: &str) -> Vec<String> {
        let mut refs = Vec::new();
        for (i, _) in text.match_indices("crate::") {
            let rest = &text[i + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for part in group[..end].split(',') {
                    let name: String = part
                        .trim()
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() {
                        refs.push(name);
                    }
                }
            } else {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                refs.push(name);
            }
        }
        refs
    }

    #[test]
    fn modules_import_only_lower_layers() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut all = Vec::new();
        files(&src, &mut all);
        let mut violations = Vec::new();
        for file in all {
            let rel = file.strip_prefix(&src).unwrap();
            let first = rel
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy();
            let module = first.trim_end_matches(".rs").to_string();
            if matches!(module.as_str(), "lib" | "main" | "layers") {
                continue;
            }
            let own = layer(&module)
                .unwrap_or_else(|| panic!("src/{module} is not in LAYERS (src/layers.rs)"));
            let text = std::fs::read_to_string(&file).unwrap();
            for used in crate_refs(&text) {
                if used == module {
                    continue;
                }
                let Some(theirs) = layer(&used) else { continue };
                if theirs >= own {
                    violations.push(format!(
                        "{} (layer {own}) uses crate::{used} (layer {theirs})",
                        rel.display()
                    ));
                }
            }
        }
        assert!(violations.is_empty(), "{}", violations.join("\n"));
    }
}
