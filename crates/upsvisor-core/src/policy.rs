//! Power policy: a pure function of one device's power history and the
//! configuration. Feed it observations with [`Policy::observe`]; it says
//! whether the device is on battery (debounced), whether a shutdown trigger
//! has fired, and whether mains is stable enough to restore.
//!
//! Redundant feeds are judged with [`hosts_at_risk`]: a host is at risk only
//! when fewer than its `min_supplies` feeds are healthy (NUT's MINSUPPLIES).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::clock::Instant;
use crate::model::{DeviceId, HostId, Inventory};
use crate::{PowerSource, PowerStatus};

/// What to do when a device has not been heard from past the dead time and
/// was last seen on battery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum LostContactOnBattery {
    /// Treat the device as critical: start the shutdown (NUT's behaviour).
    Critical,
    /// Only raise an alert.
    AlertOnly,
}

/// Policy settings. Every trigger is optional; any one that fires starts an
/// episode.
///
/// Start from `Default` and change what differs with the setters:
///
/// ```
/// use std::time::Duration;
/// let mut c = upsvisor_core::PolicyConfig::default();
/// c.on_battery_for(Some(Duration::from_secs(120))).on_fsd(true);
/// ```
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct PolicyConfig {
    /// The outage has lasted this long and the device is on battery now.
    /// The outage counts from the first on-battery reading since mains was
    /// last *stable* (`stable_for`), so mains that flickers (short returns
    /// that never become stable) does not restart it.
    pub(crate) on_battery_for: Option<Duration>,
    /// Runtime below this many seconds while on battery.
    pub(crate) runtime_below_s: Option<u32>,
    /// Charge below this percentage while on battery.
    pub(crate) charge_below_pct: Option<f32>,
    /// The device's low-battery flag while on battery.
    pub(crate) on_low_battery: bool,
    /// The device's forced-shutdown flag.
    pub(crate) on_fsd: bool,
    /// On-battery readings shorter than this are blips and ignored.
    pub(crate) debounce: Duration,
    /// Mains must be back this long before the policy calls it stable.
    pub(crate) stable_for: Duration,
    /// ... and the charge at least this high.
    pub(crate) restore_min_charge_pct: f32,
    /// Whether a device that reports no charge at all (Q1 serial UPSes,
    /// most PDUs) passes the charge gate. Off by default: unknown is not
    /// enough to carry another shutdown.
    #[cfg_attr(feature = "serde", serde(default))]
    pub(crate) restore_without_charge: bool,
    /// A device not heard from for this long has lost contact.
    pub(crate) dead_time: Duration,
    /// What lost contact means when the device was last seen on battery.
    pub(crate) lost_contact_on_battery: LostContactOnBattery,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            on_battery_for: None,
            runtime_below_s: Some(300),
            charge_below_pct: None,
            on_low_battery: true,
            on_fsd: true,
            debounce: Duration::from_secs(5),
            stable_for: Duration::from_secs(60),
            restore_min_charge_pct: 30.0,
            restore_without_charge: false,
            dead_time: Duration::from_secs(30),
            lost_contact_on_battery: LostContactOnBattery::Critical,
        }
    }
}

impl PolicyConfig {
    /// Sets the on-battery-for trigger.
    ///
    /// The outage has lasted this long and the device is on battery now.
    /// The outage counts from the first on-battery reading since mains was
    /// last *stable* (`stable_for`), so mains that flickers (short returns
    /// that never become stable) does not restart it.
    ///
    /// Default: `None`.
    pub fn on_battery_for(&mut self, d: Option<Duration>) -> &mut Self {
        self.on_battery_for = d;
        self
    }
    /// Sets the runtime trigger.
    ///
    /// Runtime below this many seconds while on battery.
    ///
    /// Default: `Some(300)`.
    pub fn runtime_below_s(&mut self, s: Option<u32>) -> &mut Self {
        self.runtime_below_s = s;
        self
    }
    /// Sets the charge trigger.
    ///
    /// Charge below this percentage while on battery.
    ///
    /// Default: `None`.
    pub fn charge_below_pct(&mut self, p: Option<f32>) -> &mut Self {
        self.charge_below_pct = p;
        self
    }
    /// Sets whether the device's low-battery flag (`LB`) while on battery
    /// starts an episode.
    ///
    /// Default: `true`.
    pub fn on_low_battery(&mut self, yes: bool) -> &mut Self {
        self.on_low_battery = yes;
        self
    }
    /// Sets whether the device's forced-shutdown flag (`FSD`) starts an
    /// episode.
    ///
    /// Default: `true`.
    pub fn on_fsd(&mut self, yes: bool) -> &mut Self {
        self.on_fsd = yes;
        self
    }
    /// Sets the debounce.
    ///
    /// On-battery readings shorter than this are blips and ignored.
    ///
    /// Default: `Duration::from_secs(5)`.
    pub fn debounce(&mut self, d: Duration) -> &mut Self {
        self.debounce = d;
        self
    }
    /// Sets how long mains must be back.
    ///
    /// Mains must be back this long before the policy calls it stable.
    ///
    /// Default: `Duration::from_secs(60)`.
    pub fn stable_for(&mut self, d: Duration) -> &mut Self {
        self.stable_for = d;
        self
    }
    /// Sets the charge needed to restore.
    ///
    /// ... and the charge at least this high.
    ///
    /// Default: `30.0`.
    pub fn restore_min_charge_pct(&mut self, p: f32) -> &mut Self {
        self.restore_min_charge_pct = p;
        self
    }
    /// Sets whether a device without a charge reading passes the gate.
    ///
    /// Whether a device that reports no charge at all (Q1 serial UPSes,
    /// most PDUs) passes the charge gate. Off by default: unknown is not
    /// enough to carry another shutdown.
    pub fn restore_without_charge(&mut self, yes: bool) -> &mut Self {
        self.restore_without_charge = yes;
        self
    }
    /// Sets the dead time.
    ///
    /// A device not heard from for this long has lost contact.
    ///
    /// Default: `Duration::from_secs(30)`.
    pub fn dead_time(&mut self, d: Duration) -> &mut Self {
        self.dead_time = d;
        self
    }
    /// Sets what lost contact on battery means: what a device not heard
    /// from for [`PolicyConfig::dead_time`], last seen on battery, counts as.
    ///
    /// Default: [`LostContactOnBattery::Critical`].
    pub fn lost_contact_on_battery(&mut self, a: LostContactOnBattery) -> &mut Self {
        self.lost_contact_on_battery = a;
        self
    }
}

/// Why a shutdown was triggered.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case", tag = "trigger"))]
#[non_exhaustive]
pub enum Trigger {
    /// On battery for longer than allowed.
    OnBatteryFor {
        /// How long.
        secs: u64,
    },
    /// Runtime below the threshold.
    Runtime {
        /// Reported runtime.
        runtime_s: u32,
    },
    /// Charge below the threshold.
    Charge {
        /// Reported charge.
        charge_pct: f32,
    },
    /// The device's low-battery flag.
    LowBattery,
    /// The device's forced-shutdown flag.
    Fsd,
    /// Lost contact while on battery.
    LostContact {
        /// Time since last heard from.
        silent_s: u64,
    },
}

/// An alert that needs a human but no action.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case", tag = "alert"))]
#[non_exhaustive]
pub enum Alert {
    /// No word from the device past the dead time; last seen on line.
    LostContact {
        /// Time since last heard from.
        silent_s: u64,
    },
    /// The device reports stale data.
    StaleData,
    /// The device does not say where its output comes from (an SNMP value
    /// outside the MIB's enumeration, "other" without battery evidence, a
    /// rack PDU): neither on line nor on battery.
    SourceUnknown {
        /// For how long, in seconds.
        for_s: u64,
    },
}

/// The policy's judgement after an observation.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct Verdict {
    /// On battery, debounced.
    pub on_battery: bool,
    /// A shutdown trigger that has fired (latched until mains is stable).
    pub trigger: Option<Trigger>,
    /// Mains back for `stable_for` with enough charge and no `LB`: restore
    /// may start VMs.
    pub mains_stable: bool,
    /// Mains back for `stable_for`, whatever the battery: the outage is
    /// over (the trigger latch clears), though restore may still be held by
    /// the charge gate.
    #[cfg_attr(feature = "serde", serde(default))]
    pub mains_back: bool,
    /// Alerts.
    pub alerts: Vec<Alert>,
    /// The last status read, if any.
    pub last: Option<PowerStatus>,
}

impl Verdict {
    /// Healthy: no trigger fired (a feed counted by MINSUPPLIES).
    pub fn healthy(&self) -> bool {
        self.trigger.is_none()
    }
}

/// One device's policy state.
///
/// Serialises its state only (the engine journals it so that a restart
/// keeps the outage's start, the last reading and when it was heard); the
/// configuration is the one in force, given again by [`Policy::resume_with`].
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Policy {
    #[cfg_attr(feature = "serde", serde(skip))]
    config: PolicyConfig,
    last_heard: Option<Instant>,
    last: Option<PowerStatus>,
    /// First on-battery reading of the current run of them.
    ob_since: Option<Instant>,
    /// First on-line reading of the current run of them.
    ol_since: Option<Instant>,
    /// First on-battery reading since mains was last stable: the outage.
    #[cfg_attr(feature = "serde", serde(default))]
    outage_since: Option<Instant>,
    /// First reading of the current run of "source unknown" ones.
    #[cfg_attr(feature = "serde", serde(default))]
    unknown_since: Option<Instant>,
    trigger: Option<Trigger>,
    created: Instant,
}

impl Policy {
    /// A policy that has heard nothing yet, created at `now`.
    pub fn new(config: PolicyConfig, now: Instant) -> Self {
        Policy {
            config,
            last_heard: None,
            last: None,
            ob_since: None,
            ol_since: None,
            outage_since: None,
            unknown_since: None,
            trigger: None,
            created: now,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &PolicyConfig {
        &self.config
    }

    /// Takes up journaled state under the configuration in force now.
    pub fn resume_with(&mut self, config: PolicyConfig) {
        self.config = config;
    }

    /// An outage is in progress: on battery since mains was last stable.
    pub fn in_outage(&self) -> bool {
        self.outage_since.is_some() || self.ob_since.is_some()
    }

    /// Feeds one observation: a status, or `None` when the device did not
    /// answer (or answered with stale data).
    pub fn observe(&mut self, now: Instant, status: Option<&PowerStatus>) -> Verdict {
        let mut alerts = Vec::new();
        match status {
            Some(s) if !s.stale => {
                self.last_heard = Some(now);
                self.last = Some(s.clone());
                match s.source {
                    PowerSource::OnBattery => {
                        self.ob_since.get_or_insert(now);
                        self.outage_since.get_or_insert(now);
                        self.ol_since = None;
                        self.unknown_since = None;
                    }
                    PowerSource::OnLine | PowerSource::Bypass => {
                        self.ol_since.get_or_insert(now);
                        self.ob_since = None;
                        self.unknown_since = None;
                    }
                    // Unknown source is evidence of neither: it starts no
                    // outage, counts as no battery time (see `on_battery`
                    // below), and once it has lasted `stable_for` the
                    // outage it interrupted is no longer evidenced either.
                    PowerSource::Unknown => {
                        let since = *self.unknown_since.get_or_insert(now);
                        if now - since >= self.config.stable_for {
                            self.ob_since = None;
                            self.outage_since = None;
                        }
                        alerts.push(Alert::SourceUnknown {
                            for_s: (now - since).as_secs(),
                        });
                    }
                    // Output off: neither stable mains nor battery, and it
                    // ends an on-line streak. A UPS that cut its output
                    // (shutdown-with-return, a flat battery) reports OFF
                    // until mains returns *and* its return delay has
                    // passed; only OL after that is mains back. Kept, a
                    // streak begun by a short return of mains just before
                    // the cut (the OB reading between them missed) counted
                    // as mains back while mains was out, and restore gave
                    // up on hosts that had no power (seed 743754279).
                    PowerSource::Off => {
                        self.ol_since = None;
                    }
                }
            }
            Some(_) => alerts.push(Alert::StaleData),
            None => {}
        }
        let silent = now - self.last_heard.unwrap_or(self.created);
        let lost = silent >= self.config.dead_time;
        let last_on_battery = self.last.as_ref().is_some_and(|s| s.on_battery());
        let on_battery = self
            .ob_since
            .is_some_and(|since| now - since >= self.config.debounce)
            && !self
                .last
                .as_ref()
                .is_some_and(|s| s.source == PowerSource::Unknown);

        let mut fired = None;
        if let Some(s) = self.last.as_ref().filter(|_| !lost) {
            let c = &self.config;
            if c.on_fsd && s.fsd {
                fired = Some(Trigger::Fsd);
            } else if on_battery {
                if c.on_low_battery && s.low_battery {
                    fired = Some(Trigger::LowBattery);
                } else if let (Some(lim), Some(rt)) = (c.runtime_below_s, s.runtime_s) {
                    if rt < lim {
                        fired = Some(Trigger::Runtime { runtime_s: rt });
                    }
                }
                if fired.is_none() {
                    if let (Some(lim), Some(ch)) = (c.charge_below_pct, s.charge_pct) {
                        if ch < lim {
                            fired = Some(Trigger::Charge { charge_pct: ch });
                        }
                    }
                }
            }
            // The outage's length, not this run's: flicker does not
            // restart it. It fires only while on battery now.
            if fired.is_none() && s.on_battery() {
                if let (Some(lim), Some(t0)) = (c.on_battery_for, self.outage_since) {
                    let out_for = now - t0;
                    if out_for >= lim && out_for >= c.debounce {
                        fired = Some(Trigger::OnBatteryFor {
                            secs: out_for.as_secs(),
                        });
                    }
                }
            }
        }
        if lost {
            if last_on_battery
                && self.config.lost_contact_on_battery == LostContactOnBattery::Critical
            {
                fired = fired.or(Some(Trigger::LostContact {
                    silent_s: silent.as_secs(),
                }));
            } else {
                alerts.push(Alert::LostContact {
                    silent_s: silent.as_secs(),
                });
            }
        }

        let charge_ok = match self.last.as_ref().and_then(|s| s.charge_pct) {
            Some(c) => c >= self.config.restore_min_charge_pct,
            None => self.config.restore_without_charge,
        };
        let mains_back = !lost
            && self
                .ol_since
                .is_some_and(|t| now - t >= self.config.stable_for)
            && !self.last.as_ref().is_some_and(|s| s.fsd);
        let mains_stable = mains_back
            && charge_ok
            // LB may stay set for a while after mains returns (a drained
            // battery): not enough to carry another shutdown.
            && !self.last.as_ref().is_some_and(|s| s.fsd || s.low_battery);
        // A trigger latches until mains is stable again: a flapping supply
        // does not cancel a shutdown decision on its first on-line reading.
        // A drained battery (no charge reading, LB that lingers) holds
        // restore, not the end of the outage: a later outage must fire.
        if fired.is_some() && self.trigger.is_none() {
            self.trigger = fired;
        } else if mains_back {
            self.trigger = None;
        }
        // Mains on line for `stable_for` ends the outage, whatever the
        // charge (the charge gates restore, not the outage's length).
        if !lost
            && self
                .ol_since
                .is_some_and(|t| now - t >= self.config.stable_for)
        {
            self.outage_since = None;
        }
        Verdict {
            on_battery,
            trigger: self.trigger.clone(),
            mains_stable,
            mains_back,
            alerts,
            last: self.last.clone(),
        }
    }
}

/// Hosts at risk: those with fewer healthy feeds than their
/// `min_supplies`. A host no outlet feeds is never at risk (nothing here
/// powers it). A feed whose device has no verdict counts as unhealthy.
pub fn hosts_at_risk(
    inventory: &Inventory,
    verdicts: &BTreeMap<DeviceId, Verdict>,
) -> BTreeSet<HostId> {
    inventory
        .hosts
        .iter()
        .filter(|h| {
            let feeds: Vec<_> = inventory.feeds_of(&h.id).collect();
            if feeds.is_empty() {
                return false;
            }
            let healthy = feeds
                .iter()
                .filter(|o| verdicts.get(&o.device).is_some_and(Verdict::healthy))
                .count();
            healthy < h.min_supplies as usize
        })
        .map(|h| h.id.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StatusToken;
    use crate::model::{HostEntry, Outlet, TransportKind};

    fn st(tokens: &str, charge: Option<f32>, runtime: Option<u32>) -> PowerStatus {
        let mut s = PowerStatus::from_tokens(StatusToken::parse_list(tokens));
        s.charge_pct = charge;
        s.runtime_s = runtime;
        s
    }

    fn t(s: u64) -> Instant {
        Instant::from_millis(s * 1000)
    }

    /// Runs a script of (second, observation) and returns the verdicts.
    fn run(cfg: PolicyConfig, script: &[(u64, Option<PowerStatus>)]) -> Vec<Verdict> {
        let mut p = Policy::new(cfg, t(0));
        script
            .iter()
            .map(|(s, o)| p.observe(t(*s), o.as_ref()))
            .collect()
    }

    #[test]
    fn table() {
        let ol = || Some(st("OL CHRG", Some(100.0), Some(1200)));
        let ob = |rt| Some(st("OB DISCHRG", Some(80.0), Some(rt)));
        let oblb = || Some(st("OB LB", Some(8.0), Some(90)));
        let mut cfg = PolicyConfig::default();
        cfg.on_battery_for(Some(Duration::from_secs(120)));
        struct Case {
            name: &'static str,
            script: Vec<(u64, Option<PowerStatus>)>,
            // (on_battery, triggered, stable) of the last verdict
            expect: (bool, bool, bool),
        }
        let cases = vec![
            Case {
                name: "steady mains",
                script: vec![(0, ol()), (61, ol())],
                expect: (false, false, true),
            },
            Case {
                name: "blip under debounce",
                script: vec![(0, ol()), (10, ob(900)), (13, ol()), (14, ol())],
                expect: (false, false, false),
            },
            Case {
                name: "debounced on battery",
                script: vec![(0, ol()), (10, ob(900)), (16, ob(890))],
                expect: (true, false, false),
            },
            Case {
                name: "on battery too long",
                script: vec![(0, ob(900)), (60, ob(900)), (121, ob(900))],
                expect: (true, true, false),
            },
            Case {
                name: "runtime below",
                script: vec![(0, ob(900)), (6, ob(250))],
                expect: (true, true, false),
            },
            Case {
                name: "runtime below but not debounced",
                script: vec![(0, ob(250))],
                expect: (false, false, false),
            },
            Case {
                name: "low battery",
                script: vec![(0, ob(900)), (6, oblb())],
                expect: (true, true, false),
            },
            Case {
                name: "fsd even on line",
                script: vec![(0, Some(st("OL FSD", None, None)))],
                expect: (false, true, false),
            },
            Case {
                name: "flap keeps the latch",
                script: vec![
                    (0, ob(900)),
                    (6, oblb()),
                    (7, ol()),
                    (8, ob(900)),
                    (9, ol()),
                    (30, ol()),
                ],
                expect: (false, true, false),
            },
            Case {
                name: "stable mains releases the latch",
                script: vec![(0, ob(900)), (6, oblb()), (7, ol()), (68, ol())],
                expect: (false, false, true),
            },
            Case {
                // A drained battery may keep LB for a while after mains
                // returns: not enough to carry another shutdown, so restore
                // (which waits for mains_stable) waits too.
                name: "LB on line is not stable mains",
                script: vec![
                    (0, ob(900)),
                    (6, oblb()),
                    (7, Some(st("OL LB CHRG", Some(50.0), Some(300)))),
                    (100, Some(st("OL LB CHRG", Some(50.0), Some(300)))),
                ],
                // The outage is over (the latch clears, so a later outage
                // fires), but restore is held.
                expect: (false, false, false),
            },
            Case {
                name: "stable once LB clears",
                script: vec![
                    (0, ob(900)),
                    (6, oblb()),
                    (7, Some(st("OL LB CHRG", Some(50.0), Some(300)))),
                    (100, Some(st("OL CHRG", Some(50.0), Some(600)))),
                ],
                expect: (false, false, true),
            },
            Case {
                // Mains that flickers (returns shorter than stable_for, each
                // on-battery run shorter than the 120 s limit) still
                // triggers at 120 s of outage.
                name: "flicker does not restart the outage",
                script: vec![
                    (0, ob(900)),
                    (50, ol()),
                    (60, ob(900)),
                    (110, ol()),
                    (115, ob(900)),
                    (121, ob(900)),
                ],
                expect: (true, true, false),
            },
            Case {
                name: "stable mains ends the outage",
                script: vec![
                    (0, ob(900)),
                    (50, ol()),
                    (111, ol()),
                    (112, ob(900)),
                    (130, ob(900)),
                ],
                expect: (true, false, false),
            },
            Case {
                name: "lost contact on line: alert only",
                script: vec![(0, ol()), (31, None)],
                expect: (false, false, false),
            },
            Case {
                name: "lost contact on battery: critical",
                script: vec![(0, ob(900)), (6, ob(900)), (40, None)],
                expect: (true, true, false),
            },
            Case {
                name: "brief silence on battery is not lost",
                script: vec![(0, ob(900)), (6, ob(900)), (20, None)],
                expect: (true, false, false),
            },
            Case {
                name: "stale data is not fresh data",
                script: vec![
                    (0, ob(900)),
                    (
                        31,
                        Some({
                            let mut s = st("OL", None, None);
                            s.stale = true;
                            s
                        }),
                    ),
                ],
                expect: (true, true, false),
            },
        ];
        for c in cases {
            let v = run(cfg.clone(), &c.script);
            let last = v.last().unwrap();
            assert_eq!(
                (last.on_battery, last.trigger.is_some(), last.mains_stable),
                c.expect,
                "case {:?}: {last:?}",
                c.name
            );
        }
    }

    #[test]
    fn lost_contact_setting_is_explicit() {
        let mut cfg = PolicyConfig::default();
        cfg.lost_contact_on_battery(LostContactOnBattery::AlertOnly);
        let ob = st("OB", Some(80.0), Some(900));
        let v = run(cfg, &[(0, Some(ob.clone())), (6, Some(ob)), (40, None)]);
        let last = v.last().unwrap();
        assert!(last.trigger.is_none());
        assert_eq!(last.alerts, vec![Alert::LostContact { silent_s: 34 }]);
    }

    #[test]
    fn unknown_source_neither_starts_nor_extends_an_outage() {
        let unknown = || {
            let mut s = st("", Some(100.0), Some(1200));
            s.source = PowerSource::Unknown;
            Some(s)
        };
        let ob = Some(st("OB DISCHRG", Some(80.0), Some(900)));
        let mut cfg = PolicyConfig::default();
        cfg.on_battery_for(Some(Duration::from_secs(120)));
        // Unknown alone: no outage, an alert.
        let v = run(cfg.clone(), &[(0, unknown()), (300, unknown())]);
        let last = v.last().unwrap();
        assert!(!last.on_battery && last.trigger.is_none());
        assert!(matches!(
            last.alerts[..],
            [Alert::SourceUnknown { for_s: 300 }]
        ));
        // An outage interrupted by unknown readings does not keep counting
        // as battery time, and after stable_for it is no longer evidenced:
        // a later on-battery reading starts afresh.
        let v = run(
            cfg,
            &[
                (0, ob.clone()),
                (6, ob.clone()),
                (10, unknown()),
                (100, unknown()),
                (101, ob.clone()),
                (130, ob),
            ],
        );
        assert!(!v[2].on_battery, "unknown is not battery");
        assert!(v.last().unwrap().trigger.is_none(), "{:?}", v.last());
    }

    #[test]
    fn unknown_charge_holds_restore_unless_configured() {
        let ol = st("OL CHRG", None, None);
        let v = run(
            PolicyConfig::default(),
            &[(0, Some(ol.clone())), (100, Some(ol.clone()))],
        );
        assert!(
            !v[1].mains_stable,
            "no charge reading: not enough to restore"
        );
        let mut cfg = PolicyConfig::default();
        cfg.restore_without_charge(true);
        let v = run(cfg, &[(0, Some(ol.clone())), (100, Some(ol))]);
        assert!(v[1].mains_stable, "configured to pass without a charge");
    }

    #[test]
    fn restore_needs_charge() {
        let low = st("OL CHRG", Some(20.0), None);
        let v = run(
            PolicyConfig::default(),
            &[(0, Some(low.clone())), (100, Some(low))],
        );
        assert!(!v[1].mains_stable);
    }

    #[test]
    fn redundant_feeds() {
        let inv = Inventory::new(
            vec![
                HostEntry::new("dual", "10.0.0.1", TransportKind::Soap).with_min_supplies(1),
                HostEntry::new("strict", "10.0.0.2", TransportKind::Soap).with_min_supplies(2),
                HostEntry::new("single", "10.0.0.3", TransportKind::Soap),
                HostEntry::new("unfed", "10.0.0.4", TransportKind::Soap),
            ],
            vec![
                Outlet::new(
                    "ups-a",
                    "1",
                    ["dual".into(), "strict".into(), "single".into()],
                ),
                Outlet::new("ups-b", "1", ["dual".into(), "strict".into()]),
            ],
        );
        inv.validate().unwrap();
        let ok = Verdict {
            on_battery: false,
            trigger: None,
            mains_stable: true,
            mains_back: true,
            alerts: vec![],
            last: None,
        };
        let bad = Verdict {
            trigger: Some(Trigger::LowBattery),
            ..ok.clone()
        };
        let v = |a: &Verdict, b: &Verdict| {
            BTreeMap::from([
                (DeviceId::from("ups-a"), a.clone()),
                (DeviceId::from("ups-b"), b.clone()),
            ])
        };
        let ids = |s: &[&str]| s.iter().map(|x| HostId::from(*x)).collect::<BTreeSet<_>>();
        assert_eq!(hosts_at_risk(&inv, &v(&ok, &ok)), ids(&[]));
        // One feed of two lost: only hosts needing both, and the single-fed one.
        assert_eq!(
            hosts_at_risk(&inv, &v(&bad, &ok)),
            ids(&["single", "strict"])
        );
        assert_eq!(hosts_at_risk(&inv, &v(&ok, &bad)), ids(&["strict"]));
        // Both lost: everything fed.
        assert_eq!(
            hosts_at_risk(&inv, &v(&bad, &bad)),
            ids(&["dual", "single", "strict"])
        );
    }
}
