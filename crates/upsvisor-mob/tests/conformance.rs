//! Conformance: the MOB page parser on every real capture in
//! `../shared/data/real-outputs/mob` (see its README), compared with each
//! case's `.meta` `expect`: `text` maps a dotted property path to its
//! text, `links` maps one to the moids it links. The test output names
//! each case's file (`cargo test -- --nocapture`).
#![allow(clippy::unwrap_used)]

use serde_json::{Map, Value, json};
use upsvisor_mob::page::parse_page;
use upsvisor_testkit::corpus::{Case, run_conformance};

fn read(case: &Case) -> Option<Result<Value, String>> {
    if case.parser() != "mob.page" {
        return None;
    }
    let expect = case.expect().ok()?;
    let page = match parse_page(case.text.as_bytes()) {
        Ok(p) => p,
        Err(e) => return Some(Err(e.to_string())),
    };
    // Read exactly the paths the case asks about.
    let mut text = Map::new();
    if let Some(Value::Object(want)) = expect.get("text") {
        for k in want.keys() {
            text.insert(k.clone(), json!(page.text(k)));
        }
    }
    let mut links = Map::new();
    if let Some(Value::Object(want)) = expect.get("links") {
        for k in want.keys() {
            links.insert(k.clone(), json!(page.links(k)));
        }
    }
    Some(Ok(json!({"text": text, "links": links})))
}

#[test]
fn mob_real_outputs() {
    run_conformance("mob", read);
}
