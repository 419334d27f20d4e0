//! Text output: aligned tables and one-line events.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::fmt::Write;

use serde_json::Value;
use upsvisor_core::{Freshness, HostId, Instant, PlanItem};

use crate::runtime::Snapshot;

/// An aligned table. `right` marks right-aligned columns.
pub fn table(header: &[&str], rows: &[Vec<String>], right: &[usize]) -> String {
    let n = header.len();
    let mut w: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate().take(n) {
            if let Some(x) = w.get_mut(i) {
                *x = (*x).max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let width = w.get(i).copied().unwrap_or(0);
            let pad = width.saturating_sub(c.chars().count());
            if i > 0 {
                s.push_str("  ");
            }
            if right.contains(&i) {
                s.push_str(&" ".repeat(pad));
                s.push_str(c);
            } else {
                s.push_str(c);
                if i + 1 < cells.len() {
                    s.push_str(&" ".repeat(pad));
                }
            }
        }
        s
    };
    let mut out = line(header.to_vec());
    out.push('\n');
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

fn freshness(f: &Freshness) -> String {
    match f {
        Freshness::Fresh => "fresh".into(),
        Freshness::Unknown => "unknown".into(),
        Freshness::Stale { error, .. } => format!("STALE ({error})"),
    }
}

/// What `status`, `plan` and `check` say first about a disarmed daemon.
pub const DISARMED: &str = "DISARMED: no power command is sent to any host or device; an outage is only audited and notified. Set `armed = true` in the config to protect the estate.";

/// The VM table grouped by feed, then host.
pub fn status(s: &Snapshot) -> String {
    let mut o = String::new();
    if !s.armed {
        let _ = writeln!(o, "{DISARMED}");
    }
    let _ = writeln!(
        o,
        "VM table after poll #{} ({} VMs, {} hosts; {} clock {})",
        s.table.cycle,
        s.table.vm_count(),
        s.table.hosts.len(),
        s.mode,
        Instant::from_millis(s.now_ms)
    );
    for (d, v) in &s.verdicts {
        let st = v.last.as_ref();
        let _ = writeln!(
            o,
            "power {d}: {} charge {} runtime {}{}",
            st.map(|s| s
                .tokens
                .iter()
                .map(|t| t.to_string())
                .collect::<Vec<_>>()
                .join(" "))
                .unwrap_or_else(|| "no answer".into()),
            st.and_then(|s| s.charge_pct)
                .map_or("?".into(), |c| format!("{c:.0}%")),
            st.and_then(|s| s.runtime_s)
                .map_or("?".into(), |r| format!("{r} s")),
            v.trigger
                .as_ref()
                .map(|t| format!(" TRIGGER {t:?}"))
                .unwrap_or_default()
        );
    }
    if let Some(e) = &s.episode {
        let _ = writeln!(
            o,
            "episode {}: {} ({} of {} VMs stopped, {} in flight{})",
            e.id,
            e.phase,
            e.stopped,
            e.vms,
            e.in_flight,
            if e.committed { ", committed" } else { "" }
        );
    }
    // Feed groups: each outlet with its hosts; hosts on no outlet last.
    let mut groups: Vec<(String, Vec<HostId>)> = s
        .inventory
        .outlets
        .iter()
        .map(|ol| (format!("feed {}/{}", ol.device, ol.id), ol.hosts.clone()))
        .collect();
    let fed: std::collections::BTreeSet<&HostId> =
        s.inventory.outlets.iter().flat_map(|o| &o.hosts).collect();
    let unfed: Vec<HostId> = s
        .table
        .hosts
        .keys()
        .filter(|h| !fed.contains(h))
        .cloned()
        .collect();
    if !unfed.is_empty() {
        groups.push((
            "not fed by any outlet (not in the shutdown plan)".into(),
            unfed,
        ));
    }
    for (feed, hosts) in groups {
        let _ = writeln!(o, "\n== {feed}");
        for h in hosts {
            let Some(r) = s.table.host(&h) else {
                let _ = writeln!(o, "-- host {h}: not polled yet");
                continue;
            };
            let product = r
                .info
                .as_ref()
                .map(|i| {
                    format!(
                        "{} {}",
                        i.product.as_deref().unwrap_or("?"),
                        i.version.as_deref().unwrap_or("")
                    )
                })
                .unwrap_or_default();
            let _ = writeln!(
                o,
                "-- host {h}: {}, {} of {} VMs on, {}",
                freshness(&r.freshness),
                r.vms_on().count(),
                r.vms.len(),
                product.trim()
            );
            let rows: Vec<Vec<String>> = r
                .vms
                .values()
                .map(|v| {
                    vec![
                        v.name.clone(),
                        format!("{:?}", v.power),
                        v.ips
                            .iter()
                            .map(|i| i.to_string())
                            .collect::<Vec<_>>()
                            .join(","),
                        v.vcpus.map(|c| c.to_string()).unwrap_or_default(),
                        v.memory_mib.map(|c| c.to_string()).unwrap_or_default(),
                        format!("{:?}", v.tools),
                        v.guest_os.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            if !rows.is_empty() {
                for l in table(
                    &["name", "power", "ips", "cpu", "MiB", "tools", "guest OS"],
                    &rows,
                    &[3, 4],
                )
                .lines()
                {
                    let _ = writeln!(o, "   {l}");
                }
            }
        }
    }
    o
}

fn secs(d: std::time::Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// The plan, in order, with cumulative estimates against the runtime.
pub fn plan(snap: &Snapshot) -> String {
    let (p, runtime_s) = (&snap.plan, snap.runtime_s);
    let mut o = String::new();
    if !snap.armed {
        let _ = writeln!(o, "{DISARMED}");
    }
    let mut rows = Vec::new();
    let mut at = std::time::Duration::ZERO;
    for (i, st) in p.stages.iter().enumerate() {
        at += st.estimate;
        // Hooks are said after the stage's own work.
        let (hooks, items): (Vec<&PlanItem>, Vec<&PlanItem>) =
            st.items.iter().partition(|i| i.hook.is_some());
        let mut what = if items.is_empty() {
            String::new()
        } else if items.len() == 1 {
            items
                .first()
                .map(|it| {
                    format!(
                        "{} {}",
                        it.action,
                        it.vm
                            .as_ref()
                            .map(|v| v.1.clone())
                            .or(it.host.as_ref().map(|h| h.to_string()))
                            .unwrap_or_default()
                    )
                })
                .unwrap_or_default()
        } else if items.iter().all(|i| i.vm.is_none() && i.host.is_some()) {
            // A host stage: its hosts in their shutdown order, each with
            // what it waits for.
            let maint = items.iter().any(|i| i.action == "enter maintenance");
            let hosts: Vec<String> = items
                .iter()
                .filter(|i| i.action != "enter maintenance")
                .map(|i| {
                    let h = i.host.as_ref().map(ToString::to_string).unwrap_or_default();
                    match i.action.find("(after ").and_then(|at| i.action.get(at..)) {
                        Some(after) => format!("{h} {after}"),
                        None if i.action.starts_with("stays up") => format!("{h} (stays up)"),
                        None => h,
                    }
                })
                .collect();
            format!(
                "{}shut down {}",
                if maint { "maintenance, then " } else { "" },
                hosts.join(", ")
            )
        } else {
            let mut acts: Vec<&str> = items.iter().map(|i| i.action.as_str()).collect();
            acts.sort_unstable();
            acts.dedup();
            format!("{} items: {}", items.len(), acts.join(", "))
        };
        if !hooks.is_empty() {
            let said: Vec<String> = hooks.iter().map(|h| hook_text(h)).collect();
            what = if what.is_empty() {
                said.join("; ")
            } else {
                format!("{what}; first {}", said.join("; "))
            };
        }
        rows.push(vec![
            (i + 1).to_string(),
            st.name.clone(),
            what,
            secs(st.estimate),
            secs(at),
        ]);
    }
    o.push_str(&table(
        &["#", "stage", "what", "estimate", "done by"],
        &rows,
        &[0, 3, 4],
    ));
    let _ = write!(
        o,
        "\ntotal {} + margin {}",
        secs(p.estimate),
        secs(p.margin)
    );
    match runtime_s {
        Some(r) => {
            let _ = writeln!(
                o,
                " against runtime {}: {}",
                secs(std::time::Duration::from_secs(u64::from(r))),
                if p.fits(r) { "FITS" } else { "DOES NOT FIT" }
            );
        }
        None => {
            let _ = writeln!(o, " (no runtime reading from any device)");
        }
    }
    for h in &p.side_hooks {
        let _ = writeln!(o, "also {}", hook_text(h));
    }
    match p.controller_found {
        Some(true) => {
            let _ = writeln!(
                o,
                "this controller's own VM was found in the estate: its host goes last, after the power-device command"
            );
        }
        Some(false) => {
            let _ = writeln!(
                o,
                "this controller's own VM (sequencer.controller_vm) was NOT found in the estate: nothing is held back for it"
            );
        }
        None => {}
    }
    // Restore's side: which hosts an episode that takes them down can
    // bring back by itself (README "Host power-on").
    if !snap.inventory.hosts.is_empty() {
        let rows: Vec<Vec<String>> = snap
            .inventory
            .hosts
            .iter()
            .map(|h| {
                vec![
                    h.id.to_string(),
                    snap.power_on.get(&h.id).cloned().unwrap_or_else(|| {
                        "none: once halted it stays off unless its power is cycled and its firmware powers on with AC".into()
                    }),
                ]
            })
            .collect();
        let _ = writeln!(
            o,
            "\nafter mains returns, hosts an episode took down are powered on by:\n{}",
            table(&["host", "power-on"], &rows, &[])
        );
    }
    o
}

/// A hook item of the plan: its action names it, its point (with the
/// group or host), whether it blocks, and its deadline.
fn hook_text(h: &PlanItem) -> String {
    h.action.clone()
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

fn cmd_text(c: &Value) -> String {
    match s(c, "kind") {
        "vm" => format!("{} {} on {}", s(c, "op"), s(c, "name"), s(c, "host")),
        "host" => format!("host {}: {}", s(c, "host"), s(c, "op")),
        "device" => format!(
            "{}: {}",
            s(c, "device"),
            c.get("cmd").unwrap_or(&Value::Null)
        ),
        _ => c.to_string(),
    }
}

/// One event line (from the JSON the API streams).
pub fn event_line(v: &Value) -> Option<String> {
    let at = Instant::from_millis(v.get("at_ms").and_then(Value::as_u64).unwrap_or(0));
    let text = match s(v, "type") {
        "table" => format!(
            "poll #{}: {} VMs",
            v.get("cycle").unwrap_or(&Value::Null),
            v.get("vms").unwrap_or(&Value::Null)
        ),
        "change" => {
            let e = v.get("event").unwrap_or(&Value::Null);
            match s(e, "event") {
                "vm_migrated" => format!(
                    "{} migrated {} -> {}",
                    s(e, "name"),
                    s(e, "from"),
                    s(e, "to")
                ),
                "host_unreachable" => {
                    format!("host {} stopped answering (VMs kept, stale)", s(e, "host"))
                }
                "host_recovered" => format!("host {} answers again", s(e, "host")),
                "vm_power_changed" => format!(
                    "{} is now {}",
                    s(e, "name"),
                    e.get("to").map(|t| t.to_string()).unwrap_or_default()
                ),
                other => format!("{other}: {e}"),
            }
        }
        "power" => {
            let verdict = v.get("verdict").unwrap_or(&Value::Null);
            let last = verdict.get("last").unwrap_or(&Value::Null);
            let tokens = last
                .get("tokens")
                .and_then(Value::as_array)
                .map(|a| {
                    // "OL", or {"Other": "WAIT"} for a token upsvisor does not model.
                    a.iter()
                        .filter_map(|t| {
                            t.as_str().map(str::to_string).or_else(|| {
                                t.as_object()
                                    .and_then(|o| o.values().next())
                                    .and_then(Value::as_str)
                                    .map(str::to_string)
                            })
                        })
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_else(|| "no answer".into());
            let num = |k: &str| {
                last.get(k)
                    .filter(|x| !x.is_null())
                    .map_or_else(|| "?".to_string(), Value::to_string)
            };
            format!(
                "{}: {} charge {}% runtime {}s{}",
                s(v, "device"),
                tokens,
                num("charge_pct"),
                num("runtime_s"),
                verdict
                    .get("trigger")
                    .filter(|t| !t.is_null())
                    .map(|t| format!(" [TRIGGER {}]", s(t, "trigger")))
                    .unwrap_or_default()
            )
        }
        "audit" => {
            let w = v.get("what").unwrap_or(&Value::Null);
            let ep = v.get("episode").unwrap_or(&Value::Null);
            match s(w, "audit") {
                "episode_started" => format!(
                    "EPISODE {ep} {}: {}",
                    if w.get("full").and_then(Value::as_bool) == Some(true) {
                        "full shutdown"
                    } else {
                        "load shedding"
                    },
                    s(w, "reason")
                ),
                "phase" => format!("phase: {}", s(w, "phase")),
                "issued" => format!("-> {}", cmd_text(w.get("cmd").unwrap_or(&Value::Null))),
                "completed" => match w.get("error").and_then(Value::as_str) {
                    Some(e) => format!(
                        "   FAILED {}: {e}",
                        cmd_text(w.get("cmd").unwrap_or(&Value::Null))
                    ),
                    None => format!("   ok {}", cmd_text(w.get("cmd").unwrap_or(&Value::Null))),
                },
                "note" => format!("note: {}", s(w, "text")),
                "forced_host_shutdown" => format!("FORCED {}: {}", s(w, "host"), s(w, "reason")),
                "hook_started" => format!(
                    "-> hook {}{} (deadline {} s)",
                    s(w, "hook"),
                    if w.get("blocking").and_then(Value::as_bool) == Some(true) {
                        ", blocking"
                    } else {
                        ""
                    },
                    w.get("deadline_s").unwrap_or(&Value::Null)
                ),
                "hook_finished" => match w.get("error").and_then(Value::as_str) {
                    Some(e) => format!("   FAILED hook {}: {e}", s(w, "hook")),
                    None => format!("   ok hook {}", s(w, "hook")),
                },
                "forced_past_hook" => {
                    format!("FORCED past hook {}: {}", s(w, "hook"), s(w, "reason"))
                }
                "episode_ended" => format!("EPISODE {ep} ended: {}", s(w, "outcome")),
                _ => format!("audit {w}"),
            }
        }
        "api" => format!(
            "api {} {} from {}: {}",
            s(v, "action"),
            s(v, "target"),
            s(v, "peer"),
            s(v, "result")
        ),
        _ => return None,
    };
    Some(format!("{at}  {text}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let t = table(
            &["a", "bb", "n"],
            &[
                vec!["xxx".into(), "y".into(), "5".into()],
                vec!["x".into(), "yyyy".into(), "123".into()],
            ],
            &[2],
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "a    bb      n");
        assert_eq!(lines[1], "xxx  y       5");
        assert_eq!(lines[2], "x    yyyy  123");
    }

    #[test]
    fn audit_lines_render() {
        let v = serde_json::json!({"type":"audit","at_ms":61000,"episode":1,
            "what":{"audit":"issued","id":3,"cmd":{"kind":"vm","host":"esx01","vm":"u","name":"web1","op":"shutdown_guest"}}});
        assert_eq!(
            event_line(&v).unwrap(),
            "T+00:01:01.000  -> shutdown_guest web1 on esx01"
        );
        assert!(event_line(&serde_json::json!({"type":"nope"})).is_none());
    }

    #[test]
    fn power_lines_render_unmodelled_tokens() {
        // What upsd says while dummy-ups starts: `WAIT`, no charge yet.
        let v = serde_json::json!({"type":"power","at_ms":2,"device":"ups1",
            "verdict":{"last":{"tokens":[{"Other":"WAIT"}],"low_battery":false},"trigger":null}});
        assert_eq!(
            event_line(&v).unwrap(),
            "T+00:00:00.002  ups1: WAIT charge ?% runtime ?s"
        );
    }
}
