//! The shape of the source: the layers `src/lib.rs` lists are kept (a module uses only
//! modules of lower layers), and no modules import each other in a circle, down to files.
//!
//! Reads the source as text: every path beginning `crate::`, `super::` or `self::`, and in a
//! file with submodules every path beginning with one of their names, is an import of the
//! module it names (the longest prefix that is a file).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module, as the path of names from the crate root (`[]` is `lib.rs`).
type Module = Vec<String>;

fn source_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src is readable") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            source_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module a file holds, and whether it is a directory's `mod.rs` (or the root).
fn module_of(src: &Path, file: &Path) -> (Module, bool) {
    let rel = file.strip_prefix(src).expect("under src").with_extension("");
    let mut names: Module = rel.iter().map(|s| s.to_string_lossy().into_owned()).collect();
    match names.last().map(String::as_str) {
        Some("mod") => {
            names.pop();
            (names, true)
        }
        Some("lib") if names.len() == 1 => (Vec::new(), true),
        _ => (names, false),
    }
}

/// The paths a line of code names, as lists of segments: `crate::a::b` → [crate, a, b].
fn paths(line: &str) -> Vec<Vec<&str>> {
    let code = line.split("//").next().unwrap_or("");
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    let mut i = 0;
    while i < code.len() {
        let starts_word = i == 0 || !is_ident(bytes[i - 1] as char) && bytes[i - 1] != b':';
        let c = bytes[i] as char;
        if !(starts_word && is_ident(c)) {
            i += 1;
            continue;
        }
        let mut segments = Vec::new();
        let mut j = i;
        loop {
            let end = code[j..].find(|c: char| !is_ident(c)).map_or(code.len(), |n| j + n);
            segments.push(&code[j..end]);
            if code[end..].starts_with("::") && code[end + 2..].starts_with(is_ident) {
                j = end + 2;
            } else {
                i = end;
                break;
            }
        }
        if segments.len() > 1 {
            out.push(segments);
        }
    }
    out
}

/// The layers `src/lib.rs` lists: lines `//! N. `a`, `b` — …`, lowest first.
fn layers(lib: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    let section = lib.lines().skip_while(|l| l.trim() != "//! ## Layers").skip(1);
    for line in section.take_while(|l| !l.starts_with("//! ##")) {
        let Some(rest) = line.strip_prefix("//! ") else { continue };
        let Some((n, rest)) = rest.split_once(". ") else { continue };
        let Ok(n) = n.trim().parse::<usize>() else { continue };
        let names = rest.split(" — ").next().unwrap_or("");
        for name in names.split(", ") {
            let name = name.trim().trim_matches('`');
            assert!(!name.is_empty() && !name.contains(' '), "unreadable layer line: {line}");
            out.insert(name.to_string(), n);
        }
    }
    out
}

struct Source {
    /// Each module's imports: module → modules it names, with a line that does.
    imports: BTreeMap<Module, BTreeMap<Module, String>>,
}

fn read_source() -> (Source, String) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    source_files(&src, &mut files);
    files.retain(|f| f != &src.join("main.rs"));
    let modules: BTreeMap<Module, (PathBuf, bool)> = files
        .iter()
        .map(|f| {
            let (m, dir) = module_of(&src, f);
            (m, (f.clone(), dir))
        })
        .collect();
    let mut imports: BTreeMap<Module, BTreeMap<Module, String>> = BTreeMap::new();
    for (module, (file, is_dir)) in &modules {
        let text = std::fs::read_to_string(file).expect("readable");
        // Where `self::` and `super::` start from.
        let here: Module = module.clone();
        let children: BTreeSet<&str> = modules
            .keys()
            .filter(|m| m.len() == module.len() + 1 && m.starts_with(module))
            .map(|m| m[module.len()].as_str())
            .collect();
        for line in text.lines() {
            for path in paths(line) {
                let (mut base, rest): (Module, &[&str]) = match path[0] {
                    "crate" => (Vec::new(), &path[1..]),
                    "self" => (here.clone(), &path[1..]),
                    "super" => {
                        let mut b = here.clone();
                        let mut rest = &path[..];
                        while rest.first() == Some(&"super") {
                            b.pop();
                            rest = &rest[1..];
                        }
                        (b, rest)
                    }
                    first if *is_dir && children.contains(first) => (module.clone(), &path[..]),
                    _ => continue,
                };
                // The longest prefix that is a module of the crate.
                let mut target = None;
                for seg in rest {
                    base.push(seg.to_string());
                    if modules.contains_key(&base) {
                        target = Some(base.clone());
                    }
                }
                let target = target.unwrap_or_else(|| base[..base.len() - rest.len()].to_vec());
                if &target != module && !target.is_empty() {
                    imports.entry(module.clone()).or_default().entry(target).or_insert_with(|| line.trim().to_string());
                }
            }
        }
    }
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("lib.rs");
    (Source { imports }, lib)
}

fn name(m: &Module) -> String {
    if m.is_empty() { "crate".into() } else { m.join("::") }
}

#[test]
fn every_module_uses_only_the_layers_below_its_own() {
    let (source, lib) = read_source();
    let layers = layers(&lib);
    assert!(layers.len() >= 8, "src/lib.rs lists its layers ({layers:?})");
    let mut wrong = Vec::new();
    for line in lib.lines() {
        if let Some(m) = line.strip_prefix("pub mod ").and_then(|l| l.strip_suffix(';'))
            && !layers.contains_key(m)
        {
            wrong.push(format!("`{m}` is in no layer of src/lib.rs"));
        }
    }
    for (from, targets) in &source.imports {
        let Some(top) = from.first() else { continue };
        let Some(&layer) = layers.get(top) else { continue };
        for (to, line) in targets {
            let other = &to[0];
            if other == top {
                continue;
            }
            match layers.get(other) {
                Some(&l) if l < layer => {}
                Some(&l) => wrong.push(format!("{} (layer {layer}) uses {} (layer {l}): {line}", name(from), name(to))),
                None => wrong.push(format!("{} uses {}, which is in no layer: {line}", name(from), name(to))),
            }
        }
    }
    assert!(wrong.is_empty(), "imports against the layers:\n{}", wrong.join("\n"));
}

#[test]
fn no_modules_import_each_other_in_a_circle() {
    let (source, _) = read_source();
    // Depth-first search for a back edge; reports one circle at a time.
    fn visit<'a>(
        m: &'a Module,
        source: &'a Source,
        state: &mut BTreeMap<&'a Module, bool>,
        stack: &mut Vec<&'a Module>,
    ) -> Option<Vec<String>> {
        state.insert(m, false);
        stack.push(m);
        for to in source.imports.get(m).into_iter().flat_map(|t| t.keys()) {
            match state.get(to) {
                Some(false) => {
                    let at = stack.iter().position(|s| *s == to).unwrap_or(0);
                    let mut circle: Vec<String> = stack[at..]
                        .iter()
                        .zip(stack[at + 1..].iter().chain(std::iter::once(&to)))
                        .map(|(a, b)| format!("{} → {}   ({})", name(a), name(b), source.imports[*a][*b]))
                        .collect();
                    circle.dedup();
                    return Some(circle);
                }
                Some(true) => {}
                None => {
                    if let Some(c) = visit(to, source, state, stack) {
                        return Some(c);
                    }
                }
            }
        }
        stack.pop();
        state.insert(m, true);
        None
    }
    let mut state = BTreeMap::new();
    for m in source.imports.keys() {
        if !state.contains_key(m) {
            let mut stack = Vec::new();
            if let Some(circle) = visit(m, &source, &mut state, &mut stack) {
                panic!("modules that import each other in a circle:\n{}", circle.join("\n"));
            }
        }
    }
}

#[test]
fn the_reader_finds_paths_and_layers() {
    let p = paths("use crate::shard::state::{Shard, ShardRef}; let x = super::super::a::b(y::z);");
    assert_eq!(p, vec![vec!["crate", "shard", "state"], vec!["super", "super", "a", "b"], vec!["y", "z"]]);
    assert!(paths("// crate::not::code").is_empty());
    let l = layers(
        "//! ## Layers\n//! 1. `sys`, `clock` — time\n//! 2. `proto` — codecs\n//! not a layer\n//! ## Next\n//! 3. `x` — y",
    );
    assert_eq!(l.get("clock"), Some(&1));
    assert_eq!(l.get("proto"), Some(&2));
    assert_eq!(l.get("x"), None);
}
