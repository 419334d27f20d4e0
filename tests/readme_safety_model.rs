//! README's safety model promises that every claim points to a test. This
//! keeps the promise checkable: every bullet of the "Safety model" section
//! names at least one test (or saved scenario), and every test it names
//! exists in the workspace's Rust sources (as a function, a module, or an
//! entry of a test-generating macro), every scenario under
//! `tests/scenarios/`. A renamed or deleted test fails here instead of
//! leaving a claim that points nowhere.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The "## Safety model" section, up to the next `## ` heading.
fn safety_model(readme: &str) -> &str {
    let start = readme
        .find("\n## Safety model")
        .expect("README has a '## Safety model' section");
    let rest = &readme[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |i| i + 3);
    &rest[..end]
}

/// Backticked spans of `text`.
fn spans(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

fn is_ident(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// The test a span names, if it names one: the last part of a path
/// (`module::test_name`) or a long snake-case name on its own (config keys
/// are short and are not taken for tests).
fn test_name(span: &str) -> Option<&str> {
    if let Some((_, last)) = span.rsplit_once("::") {
        return (is_ident(last) && last.len() >= 6).then_some(last);
    }
    (is_ident(span) && span.len() > 20 && span.contains('_')).then_some(span)
}

fn scenario(span: &str) -> Option<&str> {
    span.strip_suffix(".json")
        .filter(|s| !s.contains('/') && !s.is_empty())
        .map(|_| span)
}

/// Every word on a non-comment line of every `.rs` file under `dir`.
fn words(dir: &Path, out: &mut HashSet<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name();
        let name = name.to_string_lossy();
        if p.is_dir() {
            if name != "target" && !name.starts_with('.') {
                words(&p, out);
            }
        } else if name.ends_with(".rs") {
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            for line in text.lines() {
                if line.trim_start().starts_with("//") {
                    continue;
                }
                for w in line.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                    if w.len() >= 6 {
                        out.insert(w.to_owned());
                    }
                }
            }
        }
    }
}

#[test]
fn every_safety_claim_names_a_test_that_exists() {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let section = safety_model(&readme);
    let mut code = HashSet::new();
    for d in ["crates", "tests", "benches", "examples", "src"] {
        words(&root().join(d), &mut code);
    }
    let bullets: Vec<&str> = section.split("\n- **").skip(1).collect();
    assert!(
        bullets.len() >= 20,
        "the safety model lists {} claims: did its format change?",
        bullets.len()
    );
    let mut named = 0;
    let mut problems = Vec::new();
    for b in &bullets {
        let title = b.split("**").next().unwrap_or(b);
        let mut tests = 0;
        for s in spans(b) {
            if let Some(t) = test_name(s) {
                tests += 1;
                if !code.contains(t) {
                    problems.push(format!("{title}: names `{s}`, which is in no Rust source"));
                }
            } else if let Some(f) = scenario(s) {
                tests += 1;
                if !root().join("tests/scenarios").join(f).is_file() {
                    problems.push(format!(
                        "{title}: names scenario `{f}`, not in tests/scenarios"
                    ));
                }
            }
        }
        if tests == 0 {
            problems.push(format!("{title}: names no test"));
        }
        named += tests;
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(named >= bullets.len());
}

#[test]
fn the_checker_catches_a_missing_test_and_a_claim_without_one() {
    assert_eq!(
        test_name("sequencer::a_vm_is_stopped"),
        Some("a_vm_is_stopped")
    );
    assert_eq!(test_name("force_host_after_s"), None, "a config key");
    assert_eq!(
        test_name("a_host_whose_bmc_refuses_holds_only_its_own_vms"),
        Some("a_host_whose_bmc_refuses_holds_only_its_own_vms")
    );
    assert_eq!(test_name("LB"), None);
    assert_eq!(scenario("restore-pauses.json"), Some("restore-pauses.json"));
    let text = "x\n## Safety model\n- **A.** `t::exists_here_ok`\n- **B.** no test\n## Next\n- **C.** `t::outside`";
    let s = safety_model(text);
    assert!(s.contains("**B.**") && !s.contains("**C.**"), "{s}");
    assert_eq!(spans("a `b` c `d`"), ["b", "d"]);
}
