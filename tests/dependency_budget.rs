//! The dependency budget of the crates vendors link (issue 18, part 3),
//! counted with `cargo tree -e normal` as a vendor's build would see it
//! (default features, no dev-dependencies).
//!
//! - `upsvisor-traits`, the crate a transport or device is written against:
//!   at most [`TRAITS_BUDGET`] crates (6 today: itself and `async-trait`
//!   with its proc-macro stack), none of them an executor, an async
//!   runtime, serde or tracing.
//! - `upsvisor-core`, traits plus engine, default features: at most
//!   [`CORE_BUDGET`] = 12 crates (issue 18's budget; 12 today: the trait
//!   crate's 6, the core, and `futures-util` with `futures-core`,
//!   `futures-task`, `pin-project-lite` and `slab`). No serde, no
//!   serde_json, no tracing: those are the `serde`, `journal` and
//!   `tracing` features.
//! - `upsvisor-core` with every feature (`journal`, `serde`, `tracing`):
//!   at most [`CORE_ALL_FEATURES_CEILING`] = 22 crates, the count today;
//!   it only ever goes down. See docs/design.md, "Dependency budget".
//! - Every adapter depends on the trait crate, not on the engine.
//! - The firmware-sized build (`upsvisor-embedded`: core, NUT, SOAP on
//!   ureq) has no async runtime anywhere in its tree, and links the
//!   core's journal (restart safety: `UPSVISOR_JOURNAL`).

use std::collections::BTreeSet;
use std::process::Command;

/// Crates in `upsvisor-traits`' normal tree, itself included.
const TRAITS_BUDGET: usize = 6;
/// Crates in `upsvisor-core`'s normal tree with default features, itself
/// included: issue 18's budget.
const CORE_BUDGET: usize = 12;
/// Crates in `upsvisor-core`'s normal tree with every feature on, today.
const CORE_ALL_FEATURES_CEILING: usize = 22;

const ADAPTERS: [&str; 8] = [
    "upsvisor-bmc",
    "upsvisor-mob",
    "upsvisor-nut",
    "upsvisor-serial",
    "upsvisor-snmp",
    "upsvisor-soap",
    "upsvisor-ssh",
    "upsvisor-vihttp",
];

/// `name vX.Y.Z` of every package in `krate`'s normal tree (to `depth`),
/// default features.
fn tree(krate: &str, depth: Option<u32>) -> BTreeSet<String> {
    tree_with(krate, depth, false)
}

/// As [`tree`], with every feature of `krate` on when `all_features`.
fn tree_with(krate: &str, depth: Option<u32>, all_features: bool) -> BTreeSet<String> {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(env!("CARGO_MANIFEST_DIR")).args([
        "tree", "--locked", "-e", "normal", "--prefix", "none", "-p", krate,
    ]);
    if let Some(d) = depth {
        c.arg("--depth").arg(d.to_string());
    }
    if all_features {
        c.arg("--all-features");
    }
    let out = c.output().expect("cargo runs");
    assert!(
        out.status.success(),
        "cargo tree -p {krate} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("cargo tree prints UTF-8")
        .lines()
        .filter_map(|l| {
            // "name vX.Y.Z (path) (*)": keep name and version.
            let mut w = l.split_whitespace();
            Some(format!("{} {}", w.next()?, w.next()?))
        })
        .collect()
}

fn names(t: &BTreeSet<String>) -> BTreeSet<&str> {
    t.iter().filter_map(|p| p.split(' ').next()).collect()
}

#[test]
fn the_trait_crate_stays_within_its_budget() {
    let t = tree("upsvisor-traits", None);
    assert!(
        t.len() <= TRAITS_BUDGET,
        "upsvisor-traits' normal tree has {} crates, budget {TRAITS_BUDGET}: {t:#?}",
        t.len()
    );
    for banned in [
        "tokio",
        "serde",
        "serde_json",
        "futures-executor",
        "futures-util",
        "tracing",
    ] {
        assert!(
            !names(&t).contains(banned),
            "upsvisor-traits depends on {banned}: {t:#?}"
        );
    }
}

#[test]
fn the_core_stays_within_its_budget() {
    let t = tree("upsvisor-core", None);
    assert!(
        t.len() <= CORE_BUDGET,
        "upsvisor-core's normal tree has {} crates, budget {CORE_BUDGET}: {t:#?}",
        t.len()
    );
    // What the features bring must stay behind them.
    for banned in [
        "tokio",
        "futures-executor",
        "serde",
        "serde_json",
        "tracing",
    ] {
        assert!(
            !names(&t).contains(banned),
            "upsvisor-core depends on {banned} by default: {t:#?}"
        );
    }
    // The trait crate's tree is inside the core's: a vendor linking both
    // links it once.
    let traits = tree("upsvisor-traits", None);
    assert!(traits.is_subset(&t), "{traits:#?} not within {t:#?}");
}

#[test]
fn the_core_with_every_feature_does_not_grow() {
    let t = tree_with("upsvisor-core", None, true);
    assert!(
        t.len() <= CORE_ALL_FEATURES_CEILING,
        "upsvisor-core's normal tree with every feature has {} crates, ceiling {CORE_ALL_FEATURES_CEILING}: {t:#?}",
        t.len()
    );
    for banned in ["tokio", "futures-executor"] {
        assert!(
            !names(&t).contains(banned),
            "upsvisor-core --all-features depends on {banned}: {t:#?}"
        );
    }
    // The features are what they say: this is where serde_json and
    // tracing come from.
    for wanted in ["serde", "serde_json", "tracing"] {
        assert!(names(&t).contains(wanted), "{wanted} missing: {t:#?}");
    }
}

#[test]
fn adapters_depend_on_the_traits_not_the_engine() {
    for a in ADAPTERS {
        let direct = names(&tree(a, Some(1)))
            .into_iter()
            .map(str::to_owned)
            .collect::<BTreeSet<_>>();
        assert!(
            direct.contains("upsvisor-traits"),
            "{a} does not depend on upsvisor-traits: {direct:?}"
        );
        let all = tree(a, None);
        assert!(
            !names(&all).contains("upsvisor-core"),
            "{a} links the engine (upsvisor-core) in its normal tree"
        );
    }
}

#[test]
fn the_firmware_build_has_no_async_runtime() {
    let t = tree("upsvisor-embedded", None);
    for runtime in ["tokio", "async-std", "smol", "async-io"] {
        assert!(
            !names(&t).contains(runtime),
            "upsvisor-embedded links {runtime}"
        );
    }
    assert!(names(&t).contains("ureq"), "{t:#?}");
    // The core's `journal` feature is on: without it a controller
    // restarted mid-outage forgets the episode.
    let out = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "tree",
            "--locked",
            "-e",
            "normal,features",
            "--prefix",
            "none",
            "-p",
            "upsvisor-embedded",
        ])
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let features = String::from_utf8_lossy(&out.stdout);
    assert!(
        features
            .lines()
            .any(|l| l.trim() == "upsvisor-core feature \"journal\""),
        "upsvisor-embedded is built without upsvisor-core's `journal`:\n{features}"
    );
}
