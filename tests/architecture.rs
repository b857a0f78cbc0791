//! The architecture as a test: every `crate::` edge between the library's components must be
//! allowed by the table in `docs/architecture.md` ("Dependency rules"), the signer never
//! reaches the serial half, and the pure parsers never touch the file system, the network or
//! processes. A new edge is a design decision: add it to the table (with its reason) or remove
//! it from the code.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Components whose files must do no I/O: bytes in, values out.
const PURE: &[&str] = &[
    "src/keygen",
    "src/reject.rs",
    "src/bench/at.rs",
    "src/merkle.rs",
    "src/checkpoint.rs",
    "src/provenance.rs",
    "src/oid.rs",
];

/// What a pure file may not name.
const IO: &[&str] = &[
    "std::fs",
    "fs::File",
    "File::open",
    "File::create",
    "OpenOptions",
    "std::net",
    "std::process",
    "rusqlite",
    "serialport",
];

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `src/signer/sign/mod.rs` → `signer`; `src/util.rs` → `util`; the binary (`main.rs`,
/// `cli/`) → None (it is a client of the library, not a part of it).
fn component(rel: &str) -> Option<String> {
    let rest = rel.strip_prefix("src/")?;
    let first = rest.split('/').next()?;
    let name = first.trim_end_matches(".rs");
    match name {
        "main" | "cli" | "lib" => None,
        n => Some(n.to_string()),
    }
}

/// The source without comments (line comments and doc comments), so prose never counts.
fn code_only(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            // `//` inside a string literal ("https://…") is rare in use paths; good enough.
            Some(i) if !l[..i].contains('"') => &l[..i],
            Some(_) | None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level library modules a file names through `crate::`.
fn crate_refs(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            // `use crate::{a, b::c, d::{e, f}}`: the top-level names at depth 0.
            let mut depth = 0usize;
            let mut word = String::new();
            let mut at_start = true;
            for ch in group.chars() {
                match ch {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => at_start = true,
                    c if at_start && depth == 0 && (c.is_alphanumeric() || c == '_') => {
                        word.push(c)
                    }
                    _ => {
                        if !word.is_empty() {
                            out.insert(std::mem::take(&mut word));
                        }
                        if !ch.is_whitespace() {
                            at_start = false;
                        }
                    }
                }
            }
            if !word.is_empty() {
                out.insert(word);
            }
        } else {
            let name: String = after
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
        rest = after;
    }
    out
}

/// The fenced ```edges block of docs/architecture.md: `component: dep dep …` per line.
fn allowed_edges() -> BTreeMap<String, BTreeSet<String>> {
    let doc = std::fs::read_to_string(Path::new(ROOT).join("docs/architecture.md")).unwrap();
    let start = doc
        .find("```edges\n")
        .expect("docs/architecture.md has an ```edges block");
    let body = &doc[start + "```edges\n".len()..];
    let body = &body[..body.find("```").expect("the edges block is closed")];
    let mut table = BTreeMap::new();
    for line in body.lines() {
        let line = line.split('#').next().unwrap().trim();
        if line.is_empty() {
            continue;
        }
        let (name, deps) = line
            .split_once(':')
            .unwrap_or_else(|| panic!("edges line without ':': {line}"));
        let deps: BTreeSet<String> = deps.split_whitespace().map(str::to_string).collect();
        assert!(
            table.insert(name.trim().to_string(), deps).is_none(),
            "{name} listed twice in the edges table"
        );
    }
    table
}

struct Source {
    rel: String,
    code: String,
}

fn sources() -> Vec<Source> {
    let mut files = Vec::new();
    rs_files(&Path::new(ROOT).join("src"), &mut files);
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(ROOT).unwrap().to_string_lossy().into_owned();
            let code = code_only(&std::fs::read_to_string(&p).unwrap());
            Source { rel, code }
        })
        .collect()
}

#[test]
fn every_edge_between_components_is_in_the_table() {
    let table = allowed_edges();
    let mut actual: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut offenders = Vec::new();
    for s in sources() {
        let Some(from) = component(&s.rel) else {
            continue;
        };
        if s.rel.ends_with("/tests.rs") {
            continue; // a folder module's unit tests, compiled only under cfg(test)
        }
        assert!(
            table.contains_key(&from),
            "{}: component `{from}` is not in the edges table of docs/architecture.md",
            s.rel
        );
        // A file's unit tests may reach further (fixtures from the signer, say).
        let code = without_tests(&s.code);
        for to in crate_refs(code) {
            if to == from || to == "self" || to == "super" {
                continue;
            }
            if !table[&from].contains(&to) {
                offenders.push(format!("{} uses crate::{to}", s.rel));
            }
            actual.entry(from.clone()).or_default().insert(to);
        }
    }
    let listing: Vec<String> = actual
        .iter()
        .map(|(k, v)| format!("{k}: {}", v.iter().cloned().collect::<Vec<_>>().join(" ")))
        .collect();
    eprintln!("component edges:\n  {}", listing.join("\n  "));
    assert!(
        offenders.is_empty(),
        "edges not allowed by docs/architecture.md:\n  {}",
        offenders.join("\n  ")
    );
}

#[test]
fn the_signer_never_reaches_the_serial_half() {
    let mut offenders = Vec::new();
    for s in sources() {
        if !s.rel.starts_with("src/signer") {
            continue;
        }
        // Unit tests may build requests with the simulator's generator; they never ship.
        let code = without_tests(&s.code);
        for bad in [
            "crate::bench",
            "crate::sim",
            "crate::demo",
            "serialport",
            "super::bench",
            "super::sim",
        ] {
            if code.contains(bad) {
                offenders.push(format!("{} names {bad}", s.rel));
            }
        }
    }
    assert!(offenders.is_empty(), "{}", offenders.join("\n"));
}

/// The code before a file's unit-test module (`#[cfg(test)]` or `#[cfg(all(test, …))]`).
fn without_tests(code: &str) -> &str {
    let at = ["#[cfg(test)]", "#[cfg(all(test"]
        .iter()
        .filter_map(|m| code.find(m))
        .min();
    match at {
        Some(i) => &code[..i],
        None => code,
    }
}

#[test]
fn parsers_do_no_io() {
    let mut offenders = Vec::new();
    let mut checked = 0;
    for s in sources() {
        if !PURE.iter().any(|p| s.rel.starts_with(p)) {
            continue;
        }
        checked += 1;
        // Unit tests of a parser may write fixtures; only the parser's own code is held to it.
        let code = without_tests(&s.code);
        for bad in IO {
            if code.contains(bad) {
                offenders.push(format!("{} names {bad}", s.rel));
            }
        }
    }
    assert!(
        checked >= 5,
        "the pure file list matches nothing: {checked}"
    );
    assert!(offenders.is_empty(), "{}", offenders.join("\n"));
}

#[test]
fn the_checker_finds_what_it_looks_for() {
    // The scanner itself, on known input, so a regression in it cannot hide an edge.
    let refs = crate_refs("use crate::{a, b::c, d::{e, f}};\nlet x = crate::g::h();");
    assert_eq!(
        refs.into_iter().collect::<Vec<_>>(),
        vec!["a", "b", "d", "g"]
    );
    assert_eq!(
        code_only("let a = 1; // crate::x\n/// crate::y"),
        "let a = 1; \n"
    );
    assert_eq!(
        component("src/signer/sign/mod.rs").as_deref(),
        Some("signer")
    );
    assert_eq!(component("src/util.rs").as_deref(), Some("util"));
    assert_eq!(component("src/cli/bench.rs"), None);
}
