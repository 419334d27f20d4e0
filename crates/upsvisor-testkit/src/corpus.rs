//! Conformance corpora: real outputs captured by other people, in
//! `../shared/data/real-outputs/<dialect>/<case>.{txt,meta}` beside the
//! repository (or where `UPSVISOR_REAL_OUTPUTS` points).
//!
//! Each `.meta` holds `key: value` lines; `expect` is JSON whose every key
//! must match the parser's reading (arrays element by element, same
//! length; `{"error": ...}` means an error is the right answer).

use std::path::{Path, PathBuf};

use serde_json::Value;

/// One captured case.
#[derive(Debug, Clone)]
pub struct Case {
    /// `<dialect>/<name>.txt`, for reports.
    pub file: String,
    /// The captured output, byte-exact (lossy UTF-8).
    pub text: String,
    /// The `.meta` lines, in order.
    pub meta: Vec<(String, String)>,
}

impl Case {
    /// A `.meta` value.
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.meta
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The parser this case is for (`parser:`).
    pub fn parser(&self) -> &str {
        self.meta("parser").unwrap_or("")
    }

    /// The expected reading (`expect:` as JSON).
    pub fn expect(&self) -> Result<Value, String> {
        let e = self
            .meta("expect")
            .ok_or_else(|| format!("{}: no expect line", self.file))?;
        serde_json::from_str(e).map_err(|err| format!("{}: expect is not JSON: {err}", self.file))
    }
}

/// Where the real-outputs corpus lives.
pub fn real_outputs_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("UPSVISOR_REAL_OUTPUTS") {
        return PathBuf::from(p);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/real-outputs")
}

/// Every case of `dialect` (sorted by name). A missing corpus fails under
/// CI (`CI=true`) and is skipped loudly elsewhere (`None`); an empty one
/// always fails.
pub fn real_outputs(dialect: &str) -> Option<Vec<Case>> {
    let dir = real_outputs_dir().join(dialect);
    let Ok(rd) = std::fs::read_dir(&dir) else {
        let msg = format!(
            "conformance corpus {} is missing (set UPSVISOR_REAL_OUTPUTS)",
            dir.display()
        );
        assert!(!crate::in_ci(), "{msg}");
        eprintln!("SKIPPED (not CI): {msg}");
        return None;
    };
    let mut metas: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "meta"))
        .collect();
    metas.sort();
    assert!(!metas.is_empty(), "no cases in {}", dir.display());
    let cases = metas
        .into_iter()
        .map(|m| {
            let txt = m.with_extension("txt");
            let bytes = std::fs::read(&txt).unwrap_or_else(|e| panic!("{}: {e}", txt.display()));
            let meta = std::fs::read_to_string(&m)
                .unwrap_or_else(|e| panic!("{}: {e}", m.display()))
                .lines()
                .filter_map(|l| l.split_once(": "))
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .collect();
            Case {
                file: format!(
                    "{dialect}/{}",
                    txt.file_name()
                        .map(|f| f.to_string_lossy())
                        .unwrap_or_default()
                ),
                text: String::from_utf8_lossy(&bytes).into_owned(),
                meta,
            }
        })
        .collect();
    Some(cases)
}

/// Checks `actual` against `expect`: every key of an expected object must
/// be present and match; arrays must have the same length and match
/// element by element; numbers compare by value. Returns what differs.
pub fn check(expect: &Value, actual: &Value) -> Result<(), String> {
    fn walk(path: &str, e: &Value, a: &Value, out: &mut Vec<String>) {
        match (e, a) {
            (Value::Object(eo), Value::Object(ao)) => {
                for (k, ev) in eo {
                    let p = format!("{path}.{k}");
                    match ao.get(k) {
                        Some(av) => walk(&p, ev, av, out),
                        None => out.push(format!("{p}: expected {ev}, missing")),
                    }
                }
            }
            (Value::Array(ea), Value::Array(aa)) => {
                if ea.len() != aa.len() {
                    out.push(format!(
                        "{path}: expected {} elements, got {} ({a})",
                        ea.len(),
                        aa.len()
                    ));
                    return;
                }
                for (i, (ev, av)) in ea.iter().zip(aa).enumerate() {
                    walk(&format!("{path}[{i}]"), ev, av, out);
                }
            }
            (Value::Number(en), Value::Number(an)) if en.as_f64() == an.as_f64() => {}
            _ if e == a => {}
            _ => out.push(format!("{path}: expected {e}, got {a}")),
        }
    }
    let mut out = Vec::new();
    walk("$", expect, actual, &mut out);
    if out.is_empty() {
        Ok(())
    } else {
        Err(out.join("; "))
    }
}

/// Runs `read` on every case of `dialect`, compares with each `expect`,
/// prints one line per case (its file name and the verdict) and panics
/// listing every case that failed. `read` returns the reading as JSON, or
/// `Err(message)` when the parser refused the input (which matches an
/// expected `{"error": ...}`). A case whose `parser:` `read` does not know
/// must be answered with `None`: that fails too, so no case goes untested.
pub fn run_conformance(
    dialect: &str,
    read: impl Fn(&Case) -> Option<Result<Value, String>>,
) -> Vec<String> {
    let Some(cases) = real_outputs(dialect) else {
        return Vec::new();
    };
    let mut failures = Vec::new();
    let mut passed = Vec::new();
    for case in &cases {
        let verdict = (|| {
            let expect = case.expect()?;
            let got = read(case)
                .ok_or_else(|| format!("no conformance reader for parser {:?}", case.parser()))?;
            match (expect.get("error"), got) {
                (Some(_), Err(_)) => Ok(()),
                (Some(_), Ok(v)) => Err(format!("expected an error, got {v}")),
                (None, Err(e)) => Err(format!("parser refused it: {e}")),
                (None, Ok(v)) => check(&expect, &v),
            }
        })();
        match verdict {
            Ok(()) => {
                println!("conformance PASS {} ({})", case.file, case.parser());
                passed.push(case.file.clone());
            }
            Err(why) => {
                println!("conformance FAIL {} ({}): {why}", case.file, case.parser());
                failures.push(format!("{}: {why}", case.file));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} {dialect} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    passed
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn check_compares_subsets_and_lengths() {
        let a = json!({"rows": [{"id": "1", "x": 2}], "n": 3});
        assert!(check(&json!({"rows": [{"id": "1"}]}), &a).is_ok());
        assert!(check(&json!({"rows": [{"id": "2"}]}), &a).is_err());
        assert!(check(&json!({"rows": []}), &a).is_err());
        assert!(check(&json!({"n": 3.0}), &a).is_ok());
        assert!(check(&json!({"missing": 1}), &a).is_err());
    }
}
