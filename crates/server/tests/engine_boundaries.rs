//! The engine boundaries, checked on the source: the core (seal, barrier, tokens, policies,
//! mounts, audit, router, HTTP edge) imports no engine and names none, and no engine
//! imports another. Engines meet only through `core::services` traits wired in
//! `engines/mod.rs` (the composition root).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The engine folders (`src/engines/<name>/`).
fn engines() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(src().join("engines"))
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            p.is_dir()
                .then(|| p.file_name().unwrap().to_string_lossy().into_owned())
        })
        .collect();
    v.sort();
    v
}

/// Code lines only: comments and doc comments may mention anything.
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
}

/// A config with every optional engine (the NRF needs `[sbi]`).
const NRF_CONFIG: &str = "[storage]\nbackend = \"sqlite\"\npath = \"/tmp/custos.db\"\n[listener]\naddress = \"127.0.0.1:0\"\ntls_disable = true\n[sbi]\naddress = \"127.0.0.1:1\"\npki_mount = \"pki\"\nrole = \"sba\"\nnf_instance_id = \"4947a69a-f61b-4bc1-b9da-47c9c5d14b64\"\nfqdn = \"nrf.example\"\n";

#[test]
fn core_imports_no_engine() {
    let names = engines();
    assert!(names.len() >= 6, "engine folders not found: {names:?}");
    let settings = custos_server::engines::EngineSettings {
        sbi: Some(
            custos_server::Config::parse(NRF_CONFIG)
                .unwrap()
                .sbi
                .unwrap(),
        ),
        ..Default::default()
    };
    let (registry, _) = custos_server::engines::engines(&settings);
    let kinds = registry.type_names();
    assert!(
        kinds.contains(&"pki") && kinds.contains(&"nrf"),
        "{kinds:?}"
    );
    let mut bad = Vec::new();
    for f in rust_files(&src().join("core")) {
        let text = std::fs::read_to_string(&f).unwrap();
        for (i, l) in code_lines(&text) {
            let imports_engine = l.contains("crate::engines")
                || l.contains("super::engines")
                || l.contains("custos_server::engines");
            // An engine's type name as a string literal means the core special-cases it.
            let names_engine = kinds.iter().any(|k| l.contains(&format!("\"{k}\"")));
            if imports_engine || names_engine {
                bad.push(format!("{}:{}: {}", f.display(), i + 1, l.trim()));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "the core must not know an engine:\n{}",
        bad.join("\n")
    );
}

#[test]
fn no_engine_imports_another() {
    let names = engines();
    let mut bad = Vec::new();
    for me in &names {
        for f in rust_files(&src().join("engines").join(me)) {
            let text = std::fs::read_to_string(&f).unwrap();
            for (i, l) in code_lines(&text) {
                for other in names.iter().filter(|o| *o != me) {
                    if l.contains(&format!("engines::{other}"))
                        || l.contains(&format!("super::super::{other}"))
                    {
                        bad.push(format!("{}:{}: {}", f.display(), i + 1, l.trim()));
                    }
                }
            }
        }
    }
    assert!(
        bad.is_empty(),
        "engines meet only through core::services traits:\n{}",
        bad.join("\n")
    );
}

#[test]
fn no_source_file_over_900_lines() {
    let mut big = Vec::new();
    for f in rust_files(&src()) {
        let n = std::fs::read_to_string(&f).unwrap().lines().count();
        if n > 900 {
            big.push(format!("{} ({n} lines)", f.display()));
        }
    }
    assert!(
        big.is_empty(),
        "split these by concern:\n{}",
        big.join("\n")
    );
}
