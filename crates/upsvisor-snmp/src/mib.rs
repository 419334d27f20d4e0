//! The MIBs this adapter speaks, sans I/O: which OIDs to read, how their
//! values map into [`PowerStatus`], and which SETs carry a
//! [`DeviceCommand`].
//!
//! OIDs and enumerations follow RFC 1628 (UPS-MIB), APC's PowerNet-MIB and
//! Eaton's XUPS-MIB, cross-checked against NUT's `ietf-mib.c`, `apc-mib.c`
//! and `powerware-mib.c`. Values the agent does not report (exceptions,
//! `noSuchName`, negative "unknown" markers, out-of-range numbers) become
//! `None`, never zero.

use std::time::Duration;

use upsvisor_core::{
    DeviceCapabilities, DeviceCommand, Error, OutletId, OutletStatus, PowerStatus, StatusToken,
};

use crate::codec::{Oid, Value, VarBind};

/// Which MIB a device is read through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Mib {
    /// RFC 1628 UPS-MIB (`1.3.6.1.2.1.33`), implemented by most UPS cards.
    UpsMib,
    /// APC PowerNet-MIB, UPS branch (`1.3.6.1.4.1.318.1.1.1`), with UPS
    /// outlet groups.
    ApcUps,
    /// APC PowerNet-MIB, switched rack PDU branch (`1.3.6.1.4.1.318.1.1.12`).
    ApcPdu,
    /// Eaton (Powerware) XUPS-MIB (`1.3.6.1.4.1.534.1`), basics.
    EatonXups,
}

impl Mib {
    /// A short name for logs and errors.
    pub fn name(self) -> &'static str {
        match self {
            Mib::UpsMib => "UPS-MIB",
            Mib::ApcUps => "PowerNet-MIB (UPS)",
            Mib::ApcPdu => "PowerNet-MIB (rPDU)",
            Mib::EatonXups => "XUPS-MIB",
        }
    }
}

/// How the MIB is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum MibSelection {
    /// Probe the agent once: PowerNet UPS, then UPS-MIB, then XUPS, then
    /// PowerNet rPDU; the first that answers wins.
    #[default]
    Auto,
    /// Use this MIB without probing.
    Fixed(Mib),
}

/// Object identifiers used here, named as in their MIBs.
pub mod oids {
    /// UPS-MIB upsBatteryStatus.0 (unknown 1, normal 2, low 3, depleted 4).
    pub const UPS_BATTERY_STATUS: &[u32] = &[1, 3, 6, 1, 2, 1, 33, 1, 2, 1, 0];
    /// UPS-MIB upsSecondsOnBattery.0 (0 when on mains).
    pub const UPS_SECONDS_ON_BATTERY: &[u32] = &[1, 3, 6, 1, 2, 1, 33, 1, 2, 2, 0];
    /// UPS-MIB upsEstimatedMinutesRemaining.0.
    pub const UPS_ESTIMATED_MINUTES_REMAINING: &[u32] = &[1, 3, 6, 1, 2, 1, 33, 1, 2, 3, 0];
    /// UPS-MIB upsEstimatedChargeRemaining.0 (percent).
    pub const UPS_ESTIMATED_CHARGE_REMAINING: &[u32] = &[1, 3, 6, 1, 2, 1, 33, 1, 2, 4, 0];
    /// UPS-MIB upsOutputSource.0 (other 1, none 2, normal 3, bypass 4,
    /// battery 5, booster 6, reducer 7).
    pub const UPS_OUTPUT_SOURCE: &[u32] = &[1, 3, 6, 1, 2, 1, 33, 1, 4, 1, 0];
    /// UPS-MIB upsOutputPercentLoad.1.
    pub const UPS_OUTPUT_PERCENT_LOAD_1: &[u32] = &[1, 3, 6, 1, 2, 1, 33, 1, 4, 4, 1, 5, 1];
    /// UPS-MIB upsShutdownAfterDelay.0 (seconds; -1 cancels).
    pub const UPS_SHUTDOWN_AFTER_DELAY: &[u32] = &[1, 3, 6, 1, 2, 1, 33, 1, 8, 2, 0];
    /// UPS-MIB upsStartupAfterDelay.0 (seconds; -1 cancels).
    pub const UPS_STARTUP_AFTER_DELAY: &[u32] = &[1, 3, 6, 1, 2, 1, 33, 1, 8, 3, 0];
    /// UPS-MIB upsAutoRestart.0 (on 1, off 2).
    pub const UPS_AUTO_RESTART: &[u32] = &[1, 3, 6, 1, 2, 1, 33, 1, 8, 5, 0];

    /// PowerNet upsBasicBatteryStatus.0 (unknown 1, normal 2, low 3, ...).
    pub const APC_BASIC_BATTERY_STATUS: &[u32] = &[1, 3, 6, 1, 4, 1, 318, 1, 1, 1, 2, 1, 1, 0];
    /// PowerNet upsAdvBatteryCapacity.0 (percent).
    pub const APC_ADV_BATTERY_CAPACITY: &[u32] = &[1, 3, 6, 1, 4, 1, 318, 1, 1, 1, 2, 2, 1, 0];
    /// PowerNet upsAdvBatteryRunTimeRemaining.0 (TimeTicks).
    pub const APC_ADV_BATTERY_RUNTIME_REMAINING: &[u32] =
        &[1, 3, 6, 1, 4, 1, 318, 1, 1, 1, 2, 2, 3, 0];
    /// PowerNet upsAdvBatteryReplaceIndicator.0 (no 1, yes 2).
    pub const APC_ADV_BATTERY_REPLACE_INDICATOR: &[u32] =
        &[1, 3, 6, 1, 4, 1, 318, 1, 1, 1, 2, 2, 4, 0];
    /// PowerNet upsBasicOutputStatus.0.
    pub const APC_BASIC_OUTPUT_STATUS: &[u32] = &[1, 3, 6, 1, 4, 1, 318, 1, 1, 1, 4, 1, 1, 0];
    /// PowerNet upsAdvOutputLoad.0 (percent).
    pub const APC_ADV_OUTPUT_LOAD: &[u32] = &[1, 3, 6, 1, 4, 1, 318, 1, 1, 1, 4, 2, 3, 0];
    /// PowerNet upsAdvConfigShutoffDelay.0 (TimeTicks).
    pub const APC_ADV_CONFIG_SHUTOFF_DELAY: &[u32] = &[1, 3, 6, 1, 4, 1, 318, 1, 1, 1, 5, 2, 10, 0];
    /// PowerNet upsBasicControlConserveBattery.0 (turnOffUpsToConserveBattery 2:
    /// off now, back on when mains returns; NUT's `shutdown.return`).
    pub const APC_BASIC_CONTROL_CONSERVE_BATTERY: &[u32] =
        &[1, 3, 6, 1, 4, 1, 318, 1, 1, 1, 6, 1, 1, 0];
    /// PowerNet upsAdvControlUpsOff.0 (turnUpsOff 2, turnUpsOffGracefully 3).
    pub const APC_ADV_CONTROL_UPS_OFF: &[u32] = &[1, 3, 6, 1, 4, 1, 318, 1, 1, 1, 6, 2, 1, 0];
    /// PowerNet upsOutletGroupStatusName column.
    pub const APC_OUTLET_GROUP_STATUS_NAME: &[u32] =
        &[1, 3, 6, 1, 4, 1, 318, 1, 1, 1, 12, 1, 2, 1, 2];
    /// PowerNet upsOutletGroupStatusGroupState column (on 1, off 2, unknown 3).
    pub const APC_OUTLET_GROUP_STATUS_STATE: &[u32] =
        &[1, 3, 6, 1, 4, 1, 318, 1, 1, 1, 12, 1, 2, 1, 3];
    /// PowerNet upsOutletGroupControlCommand column (immediateOn 1,
    /// immediateOff 2, delayedOn 4, delayedOff 5, cancelPending 7).
    pub const APC_OUTLET_GROUP_CONTROL_COMMAND: &[u32] =
        &[1, 3, 6, 1, 4, 1, 318, 1, 1, 1, 12, 3, 2, 1, 3];

    /// PowerNet rPDUIdentName.0 (probe for a switched rack PDU).
    pub const APC_RPDU_IDENT_NAME: &[u32] = &[1, 3, 6, 1, 4, 1, 318, 1, 1, 12, 1, 1, 0];
    /// PowerNet rPDUOutletControlOutletCommand column (immediateOn 1,
    /// immediateOff 2, delayedOn 4, delayedOff 5, cancelPending 7).
    pub const APC_RPDU_OUTLET_CONTROL_COMMAND: &[u32] =
        &[1, 3, 6, 1, 4, 1, 318, 1, 1, 12, 3, 3, 1, 1, 4];
    /// PowerNet rPDUOutletStatusOutletName column.
    pub const APC_RPDU_OUTLET_STATUS_NAME: &[u32] =
        &[1, 3, 6, 1, 4, 1, 318, 1, 1, 12, 3, 5, 1, 1, 2];
    /// PowerNet rPDUOutletStatusOutletState column (on 1, off 2).
    pub const APC_RPDU_OUTLET_STATUS_STATE: &[u32] =
        &[1, 3, 6, 1, 4, 1, 318, 1, 1, 12, 3, 5, 1, 1, 4];

    /// XUPS xupsBatTimeRemaining.0 (seconds).
    pub const XUPS_BAT_TIME_REMAINING: &[u32] = &[1, 3, 6, 1, 4, 1, 534, 1, 2, 1, 0];
    /// XUPS xupsBatCapacity.0 (percent).
    pub const XUPS_BAT_CAPACITY: &[u32] = &[1, 3, 6, 1, 4, 1, 534, 1, 2, 4, 0];
    /// XUPS xupsBatteryAbmStatus.0 (charging 1, discharging 2, ...).
    pub const XUPS_BATTERY_ABM_STATUS: &[u32] = &[1, 3, 6, 1, 4, 1, 534, 1, 2, 5, 0];
    /// XUPS xupsOutputLoad.0 (percent).
    pub const XUPS_OUTPUT_LOAD: &[u32] = &[1, 3, 6, 1, 4, 1, 534, 1, 4, 1, 0];
    /// XUPS xupsOutputSource.0.
    pub const XUPS_OUTPUT_SOURCE: &[u32] = &[1, 3, 6, 1, 4, 1, 534, 1, 4, 5, 0];
    /// XUPS xupsControlOutputOffDelay.0 (seconds; output stays off).
    pub const XUPS_CONTROL_OUTPUT_OFF_DELAY: &[u32] = &[1, 3, 6, 1, 4, 1, 534, 1, 9, 1, 0];
    /// XUPS xupsLoadShedSecsWithRestart.0 (seconds; output returns with mains).
    pub const XUPS_LOAD_SHED_SECS_WITH_RESTART: &[u32] = &[1, 3, 6, 1, 4, 1, 534, 1, 9, 6, 0];
}

fn oid(a: &[u32]) -> Oid {
    Oid::from(a)
}

/// The OIDs read, in one GET, to pick a MIB.
pub fn probe_oids() -> Vec<Oid> {
    [
        oids::APC_BASIC_OUTPUT_STATUS,
        oids::UPS_OUTPUT_SOURCE,
        oids::XUPS_OUTPUT_SOURCE,
        oids::APC_RPDU_IDENT_NAME,
    ]
    .iter()
    .map(|a| oid(a))
    .collect()
}

/// Picks the MIB from the probe's answer (see [`MibSelection::Auto`]).
pub fn detect(answer: &[VarBind]) -> Option<Mib> {
    let has = |a: &[u32]| value(answer, a).is_some();
    if has(oids::APC_BASIC_OUTPUT_STATUS) {
        Some(Mib::ApcUps)
    } else if has(oids::UPS_OUTPUT_SOURCE) {
        Some(Mib::UpsMib)
    } else if has(oids::XUPS_OUTPUT_SOURCE) {
        Some(Mib::EatonXups)
    } else if has(oids::APC_RPDU_IDENT_NAME) {
        Some(Mib::ApcPdu)
    } else {
        None
    }
}

/// The scalar OIDs read for a status.
pub fn status_oids(mib: Mib) -> Vec<Oid> {
    let list: &[&[u32]] = match mib {
        Mib::UpsMib => &[
            oids::UPS_OUTPUT_SOURCE,
            oids::UPS_BATTERY_STATUS,
            oids::UPS_SECONDS_ON_BATTERY,
            oids::UPS_ESTIMATED_MINUTES_REMAINING,
            oids::UPS_ESTIMATED_CHARGE_REMAINING,
            oids::UPS_OUTPUT_PERCENT_LOAD_1,
        ],
        Mib::ApcUps => &[
            oids::APC_BASIC_OUTPUT_STATUS,
            oids::APC_BASIC_BATTERY_STATUS,
            oids::APC_ADV_BATTERY_CAPACITY,
            oids::APC_ADV_BATTERY_RUNTIME_REMAINING,
            oids::APC_ADV_BATTERY_REPLACE_INDICATOR,
            oids::APC_ADV_OUTPUT_LOAD,
        ],
        Mib::ApcPdu => &[oids::APC_RPDU_IDENT_NAME],
        Mib::EatonXups => &[
            oids::XUPS_OUTPUT_SOURCE,
            oids::XUPS_BAT_CAPACITY,
            oids::XUPS_BAT_TIME_REMAINING,
            oids::XUPS_BATTERY_ABM_STATUS,
            oids::XUPS_OUTPUT_LOAD,
        ],
    };
    list.iter().map(|a| oid(a)).collect()
}

/// The outlet table columns walked for a status: (state, name).
pub fn outlet_columns(mib: Mib) -> Option<(Oid, Oid)> {
    match mib {
        Mib::ApcUps => Some((
            oid(oids::APC_OUTLET_GROUP_STATUS_STATE),
            oid(oids::APC_OUTLET_GROUP_STATUS_NAME),
        )),
        Mib::ApcPdu => Some((
            oid(oids::APC_RPDU_OUTLET_STATUS_STATE),
            oid(oids::APC_RPDU_OUTLET_STATUS_NAME),
        )),
        Mib::UpsMib | Mib::EatonXups => None,
    }
}

/// The value bound to `a` in `vbs`, unless absent (exception or NULL).
fn value<'a>(vbs: &'a [VarBind], a: &[u32]) -> Option<&'a Value> {
    vbs.iter()
        .find(|vb| vb.oid.arcs() == a)
        .map(|vb| &vb.value)
        .filter(|v| !v.is_exception() && **v != Value::Null)
}

fn int(vbs: &[VarBind], a: &[u32]) -> Option<i64> {
    value(vbs, a).and_then(Value::as_i64)
}

fn percent(v: Option<i64>) -> Option<f32> {
    v.filter(|p| (0..=100).contains(p)).map(|p| p as f32)
}

fn load_percent(v: Option<i64>) -> Option<f32> {
    // Overload reads above 100; negative is "unknown".
    v.filter(|p| (0..=1000).contains(p)).map(|p| p as f32)
}

fn secs(v: Option<i64>) -> Option<u32> {
    v.and_then(|s| u32::try_from(s).ok())
}

/// One outlet row as read from a table walk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutletRow {
    /// Table index.
    pub index: u32,
    /// State value (on 1, off 2 in both APC tables).
    pub state: Option<i64>,
    /// Name, if the table gives one.
    pub name: Option<String>,
}

/// Joins the walked state and name columns into rows.
pub fn outlet_rows(mib: Mib, states: &[VarBind], names: &[VarBind]) -> Vec<OutletRow> {
    let Some((state_col, name_col)) = outlet_columns(mib) else {
        return Vec::new();
    };
    let mut rows: Vec<OutletRow> = states
        .iter()
        .filter_map(|vb| {
            let index = vb.oid.index_under(&state_col)?;
            Some(OutletRow {
                index,
                state: if vb.value.is_exception() {
                    None
                } else {
                    vb.value.as_i64()
                },
                name: None,
            })
        })
        .collect();
    for vb in names {
        let (Some(i), Value::OctetString(s)) = (vb.oid.index_under(&name_col), &vb.value) else {
            continue;
        };
        if let Some(row) = rows.iter_mut().find(|r| r.index == i) {
            let name = String::from_utf8_lossy(s).trim().to_owned();
            if !name.is_empty() {
                row.name = Some(name);
            }
        }
    }
    rows
}

/// Maps what was read into a [`PowerStatus`].
pub fn map_status(mib: Mib, vbs: &[VarBind], outlets: &[OutletRow]) -> PowerStatus {
    let mut tokens: Vec<StatusToken> = Vec::new();
    let mut add = |list: &str| tokens.extend(StatusToken::parse_list(list));
    let (charge, runtime, load);
    match mib {
        Mib::UpsMib => {
            let source = int(vbs, oids::UPS_OUTPUT_SOURCE);
            match source {
                Some(2) => add("OFF"),
                Some(3) => add("OL"),
                Some(4) => add("OL BYPASS"),
                Some(5) => add("OB"),
                Some(6) => add("OL BOOST"),
                Some(7) => add("OL TRIM"),
                _ => {
                    // Source unknown but the battery is being drawn: believe
                    // the unsafe reading.
                    if int(vbs, oids::UPS_SECONDS_ON_BATTERY).is_some_and(|s| s > 0) {
                        add("OB");
                    }
                }
            }
            if matches!(int(vbs, oids::UPS_BATTERY_STATUS), Some(3 | 4)) {
                add("LB");
            }
            charge = percent(int(vbs, oids::UPS_ESTIMATED_CHARGE_REMAINING));
            runtime =
                secs(int(vbs, oids::UPS_ESTIMATED_MINUTES_REMAINING).map(|m| m.saturating_mul(60)));
            load = load_percent(int(vbs, oids::UPS_OUTPUT_PERCENT_LOAD_1));
        }
        Mib::ApcUps => {
            match int(vbs, oids::APC_BASIC_OUTPUT_STATUS) {
                Some(2) => add("OL"),
                Some(3) => add("OB"),
                Some(4) => add("OL BOOST"),
                Some(5 | 6 | 7 | 11) => add("OFF"),
                Some(9 | 10) => add("BYPASS"),
                Some(12) => add("OL TRIM"),
                _ => {}
            }
            if int(vbs, oids::APC_BASIC_BATTERY_STATUS) == Some(3) {
                add("LB");
            }
            if int(vbs, oids::APC_ADV_BATTERY_REPLACE_INDICATOR) == Some(2) {
                add("RB");
            }
            charge = percent(int(vbs, oids::APC_ADV_BATTERY_CAPACITY));
            runtime = match value(vbs, oids::APC_ADV_BATTERY_RUNTIME_REMAINING) {
                Some(Value::TimeTicks(t)) => Some(t / 100),
                // Some firmware sends a plain number of seconds.
                Some(v) => secs(v.as_i64()),
                None => None,
            };
            load = load_percent(int(vbs, oids::APC_ADV_OUTPUT_LOAD));
        }
        Mib::EatonXups => {
            match int(vbs, oids::XUPS_OUTPUT_SOURCE) {
                Some(2 | 16) => add("OFF"),
                Some(3 | 8 | 9 | 10 | 64 | 80 | 81) => add("OL"),
                Some(4 | 96 | 100) => add("BYPASS"),
                Some(5 | 240) => add("OB"),
                Some(6) => add("OL BOOST"),
                Some(7) => add("OL TRIM"),
                _ => {}
            }
            match int(vbs, oids::XUPS_BATTERY_ABM_STATUS) {
                Some(1) => add("CHRG"),
                Some(2) => add("DISCHRG"),
                _ => {}
            }
            charge = percent(int(vbs, oids::XUPS_BAT_CAPACITY));
            runtime = secs(int(vbs, oids::XUPS_BAT_TIME_REMAINING));
            load = load_percent(int(vbs, oids::XUPS_OUTPUT_LOAD));
        }
        Mib::ApcPdu => {
            charge = None;
            runtime = None;
            load = None;
        }
    }
    let mut status = PowerStatus::from_tokens(tokens);
    status.charge_pct = charge;
    status.runtime_s = runtime;
    status.load_pct = load;
    status.outlets = outlets
        .iter()
        .map(|r| {
            let on = match r.state {
                Some(1) => Some(true),
                Some(2) => Some(false),
                _ => None,
            };
            let mut o = OutletStatus::new(r.index.to_string(), on, true);
            o.name.clone_from(&r.name);
            o
        })
        .collect();
    status
}

/// What commands work with `mib`, given the outlets seen.
pub fn capabilities(mib: Mib, outlets: &[OutletRow]) -> DeviceCapabilities {
    let mut c = DeviceCapabilities::default();
    c.switchable_outlets = outlets
        .iter()
        .map(|r| OutletId::from(r.index.to_string()))
        .collect();
    match mib {
        Mib::UpsMib | Mib::ApcUps | Mib::EatonXups => {
            c.shutdown_return = true;
            c.shutdown_stayoff = true;
        }
        Mib::ApcPdu => {}
    }
    c
}

fn outlet_index(outlet: &OutletId) -> Result<u32, Error> {
    outlet
        .as_str()
        .parse::<u32>()
        .ok()
        .filter(|i| *i >= 1)
        .ok_or_else(|| {
            Error::not_found(format!(
                "outlet {outlet:?}: SNMP outlets are numbered 1, 2, ..."
            ))
        })
}

fn delay_secs(d: Duration) -> Result<i64, Error> {
    let s = d.as_secs();
    if s > i32::MAX as u64 {
        return Err(Error::config(
            "command.delay",
            "delay too long for the MIB (max 2^31-1 s)",
        ));
    }
    Ok(s as i64)
}

fn delay_ticks(d: Duration) -> Result<u32, Error> {
    u32::try_from(d.as_millis() / 10).map_err(|_| {
        Error::config(
            "command.delay",
            "delay too long for TimeTicks (max ~497 days)",
        )
    })
}

fn unsupported(mib: Mib, what: &str) -> Error {
    Error::unsupported(format!("{what} through {}", mib.name()))
}

/// Options that shape the SETs for a command.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CommandOptions {
    /// UPS-MIB only: also set upsStartupAfterDelay to the shutdown delay
    /// plus this, for UPSes that need an explicit restart countdown besides
    /// upsAutoRestart. Note RFC 1628 starts the output when it runs out
    /// whether or not mains is back.
    pub startup_after_delay: Option<Duration>,
}

/// The SET requests that carry `cmd`, in order. Each inner list is one SET
/// PDU.
pub fn command_sets(
    mib: Mib,
    cmd: &DeviceCommand,
    opts: CommandOptions,
) -> Result<Vec<Vec<VarBind>>, Error> {
    let int = |a: &[u32], v: i64| VarBind::new(oid(a), Value::Integer(v));
    Ok(match (mib, cmd) {
        (Mib::UpsMib, DeviceCommand::ShutdownReturn { delay }) => {
            let d = delay_secs(*delay)?;
            let mut set = vec![int(oids::UPS_AUTO_RESTART, 1)];
            if let Some(extra) = opts.startup_after_delay {
                set.push(int(
                    oids::UPS_STARTUP_AFTER_DELAY,
                    d.saturating_add(delay_secs(extra)?),
                ));
            }
            set.push(int(oids::UPS_SHUTDOWN_AFTER_DELAY, d));
            vec![set]
        }
        (Mib::UpsMib, DeviceCommand::ShutdownStayOff { delay }) => vec![vec![
            int(oids::UPS_AUTO_RESTART, 2),
            int(oids::UPS_SHUTDOWN_AFTER_DELAY, delay_secs(*delay)?),
        ]],
        (Mib::UpsMib, DeviceCommand::CancelShutdown) => {
            vec![vec![int(oids::UPS_SHUTDOWN_AFTER_DELAY, -1)]]
        }

        (Mib::ApcUps, DeviceCommand::ShutdownReturn { delay }) => {
            let mut steps = Vec::new();
            if !delay.is_zero() {
                steps.push(vec![VarBind::new(
                    oid(oids::APC_ADV_CONFIG_SHUTOFF_DELAY),
                    Value::TimeTicks(delay_ticks(*delay)?),
                )]);
            }
            steps.push(vec![int(oids::APC_BASIC_CONTROL_CONSERVE_BATTERY, 2)]);
            steps
        }
        (Mib::ApcUps, DeviceCommand::ShutdownStayOff { delay }) => {
            if delay.is_zero() {
                vec![vec![int(oids::APC_ADV_CONTROL_UPS_OFF, 2)]]
            } else {
                vec![
                    vec![VarBind::new(
                        oid(oids::APC_ADV_CONFIG_SHUTOFF_DELAY),
                        Value::TimeTicks(delay_ticks(*delay)?),
                    )],
                    vec![int(oids::APC_ADV_CONTROL_UPS_OFF, 3)],
                ]
            }
        }

        (Mib::EatonXups, DeviceCommand::ShutdownReturn { delay }) => {
            vec![vec![int(
                oids::XUPS_LOAD_SHED_SECS_WITH_RESTART,
                delay_secs(*delay)?,
            )]]
        }
        (Mib::EatonXups, DeviceCommand::ShutdownStayOff { delay }) => {
            vec![vec![int(
                oids::XUPS_CONTROL_OUTPUT_OFF_DELAY,
                delay_secs(*delay)?,
            )]]
        }

        (Mib::ApcUps | Mib::ApcPdu, DeviceCommand::OutletOn { outlet }) => {
            let col = outlet_command_column(mib);
            vec![vec![VarBind::new(
                col.child(outlet_index(outlet)?),
                Value::Integer(1),
            )]]
        }
        (Mib::ApcUps | Mib::ApcPdu, DeviceCommand::OutletOff { outlet, delay }) => {
            let col = outlet_command_column(mib);
            // The delayed variant uses the delay configured in the device's
            // outlet (group) table; PowerNet has no per-command delay.
            let code = if delay.is_zero() { 2 } else { 5 };
            vec![vec![VarBind::new(
                col.child(outlet_index(outlet)?),
                Value::Integer(code),
            )]]
        }

        (_, DeviceCommand::OutletOn { .. } | DeviceCommand::OutletOff { .. }) => {
            return Err(unsupported(mib, "outlet switching"));
        }
        (_, DeviceCommand::ShutdownReturn { .. }) => {
            return Err(unsupported(mib, "shutdown with return"));
        }
        (_, DeviceCommand::ShutdownStayOff { .. }) => {
            return Err(unsupported(mib, "shutdown (stay off)"));
        }
        (_, DeviceCommand::CancelShutdown) => {
            return Err(unsupported(mib, "cancelling a shutdown"));
        }
        (_, DeviceCommand::SetFsd) => {
            return Err(Error::unsupported(
                "SetFsd: SNMP agents have no forced-shutdown flag for other clients",
            ));
        }
        (_, other) => return Err(unsupported(mib, &format!("{other:?}"))),
    })
}

fn outlet_command_column(mib: Mib) -> Oid {
    match mib {
        Mib::ApcPdu => oid(oids::APC_RPDU_OUTLET_CONTROL_COMMAND),
        _ => oid(oids::APC_OUTLET_GROUP_CONTROL_COMMAND),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use upsvisor_core::PowerSource;

    fn vb(a: &[u32], v: Value) -> VarBind {
        VarBind::new(oid(a), v)
    }

    #[test]
    fn ups_mib_states() {
        let online = [
            vb(oids::UPS_OUTPUT_SOURCE, Value::Integer(3)),
            vb(oids::UPS_BATTERY_STATUS, Value::Integer(2)),
            vb(oids::UPS_SECONDS_ON_BATTERY, Value::Integer(0)),
            vb(oids::UPS_ESTIMATED_MINUTES_REMAINING, Value::Integer(42)),
            vb(oids::UPS_ESTIMATED_CHARGE_REMAINING, Value::Integer(100)),
            vb(oids::UPS_OUTPUT_PERCENT_LOAD_1, Value::NoSuchInstance),
        ];
        let s = map_status(Mib::UpsMib, &online, &[]);
        assert_eq!(s.source, PowerSource::OnLine);
        assert!(!s.low_battery);
        assert_eq!(s.runtime_s, Some(42 * 60));
        assert_eq!(s.charge_pct, Some(100.0));
        assert_eq!(s.load_pct, None, "absent is None, not zero");

        let low = [
            vb(oids::UPS_OUTPUT_SOURCE, Value::Integer(5)),
            vb(oids::UPS_BATTERY_STATUS, Value::Integer(3)),
            vb(oids::UPS_ESTIMATED_CHARGE_REMAINING, Value::NoSuchObject),
            vb(oids::UPS_ESTIMATED_MINUTES_REMAINING, Value::Integer(-1)),
        ];
        let s = map_status(Mib::UpsMib, &low, &[]);
        assert_eq!(s.source, PowerSource::OnBattery);
        assert!(s.low_battery);
        assert_eq!(s.charge_pct, None);
        assert_eq!(s.runtime_s, None);

        let bypass = [vb(oids::UPS_OUTPUT_SOURCE, Value::Integer(4))];
        assert_eq!(
            map_status(Mib::UpsMib, &bypass, &[]).source,
            PowerSource::Bypass
        );
        let other = [
            vb(oids::UPS_OUTPUT_SOURCE, Value::Integer(1)),
            vb(oids::UPS_SECONDS_ON_BATTERY, Value::Integer(12)),
        ];
        assert_eq!(
            map_status(Mib::UpsMib, &other, &[]).source,
            PowerSource::OnBattery
        );
        assert_eq!(
            map_status(Mib::UpsMib, &[], &[]).source,
            PowerSource::Unknown
        );
    }

    #[test]
    fn apc_and_xups() {
        let apc = [
            vb(oids::APC_BASIC_OUTPUT_STATUS, Value::Integer(3)),
            vb(oids::APC_BASIC_BATTERY_STATUS, Value::Integer(3)),
            vb(oids::APC_ADV_BATTERY_CAPACITY, Value::Gauge32(37)),
            vb(
                oids::APC_ADV_BATTERY_RUNTIME_REMAINING,
                Value::TimeTicks(54_000),
            ),
            vb(oids::APC_ADV_BATTERY_REPLACE_INDICATOR, Value::Integer(2)),
        ];
        let rows = vec![
            OutletRow {
                index: 1,
                state: Some(1),
                name: Some("esx1".into()),
            },
            OutletRow {
                index: 2,
                state: Some(2),
                name: None,
            },
        ];
        let s = map_status(Mib::ApcUps, &apc, &rows);
        assert!(s.on_battery() && s.low_battery);
        assert!(s.tokens.contains(&StatusToken::RB));
        assert_eq!(s.runtime_s, Some(540));
        assert_eq!(s.charge_pct, Some(37.0));
        assert_eq!(s.outlets.len(), 2);
        assert_eq!(s.outlets[0].on, Some(true));
        assert_eq!(s.outlets[0].name.as_deref(), Some("esx1"));
        assert_eq!(s.outlets[1].on, Some(false));

        let x = [
            vb(oids::XUPS_OUTPUT_SOURCE, Value::Integer(5)),
            vb(oids::XUPS_BAT_CAPACITY, Value::Integer(80)),
            vb(oids::XUPS_BAT_TIME_REMAINING, Value::Integer(1200)),
        ];
        let s = map_status(Mib::EatonXups, &x, &[]);
        assert!(s.on_battery());
        assert_eq!(s.runtime_s, Some(1200));
        assert_eq!(s.charge_pct, Some(80.0));
    }

    #[test]
    fn detection_order() {
        let ans = |which: &[&[u32]]| {
            probe_oids()
                .into_iter()
                .map(|o| {
                    let v = if which.contains(&o.arcs()) {
                        Value::Integer(2)
                    } else {
                        Value::NoSuchObject
                    };
                    VarBind::new(o, v)
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(
            detect(&ans(&[
                oids::APC_BASIC_OUTPUT_STATUS,
                oids::UPS_OUTPUT_SOURCE
            ])),
            Some(Mib::ApcUps)
        );
        assert_eq!(
            detect(&ans(&[oids::UPS_OUTPUT_SOURCE, oids::XUPS_OUTPUT_SOURCE])),
            Some(Mib::UpsMib)
        );
        assert_eq!(
            detect(&ans(&[oids::XUPS_OUTPUT_SOURCE])),
            Some(Mib::EatonXups)
        );
        assert_eq!(
            detect(&ans(&[oids::APC_RPDU_IDENT_NAME])),
            Some(Mib::ApcPdu)
        );
        assert_eq!(detect(&ans(&[])), None);
    }

    #[test]
    fn commands() {
        let sets = command_sets(
            Mib::UpsMib,
            &DeviceCommand::ShutdownReturn {
                delay: Duration::from_secs(30),
            },
            CommandOptions::default(),
        )
        .unwrap();
        assert_eq!(
            sets,
            vec![vec![
                vb(oids::UPS_AUTO_RESTART, Value::Integer(1)),
                vb(oids::UPS_SHUTDOWN_AFTER_DELAY, Value::Integer(30)),
            ]]
        );
        let sets = command_sets(
            Mib::UpsMib,
            &DeviceCommand::CancelShutdown,
            CommandOptions::default(),
        )
        .unwrap();
        assert_eq!(
            sets,
            vec![vec![vb(oids::UPS_SHUTDOWN_AFTER_DELAY, Value::Integer(-1))]]
        );
        let sets = command_sets(
            Mib::ApcPdu,
            &DeviceCommand::OutletOff {
                outlet: "3".into(),
                delay: Duration::ZERO,
            },
            CommandOptions::default(),
        )
        .unwrap();
        assert_eq!(
            sets[0][0].oid,
            oid(oids::APC_RPDU_OUTLET_CONTROL_COMMAND).child(3)
        );
        assert_eq!(sets[0][0].value, Value::Integer(2));
        let e = command_sets(
            Mib::ApcPdu,
            &DeviceCommand::OutletOn {
                outlet: "main".into(),
            },
            CommandOptions::default(),
        )
        .unwrap_err();
        assert_eq!(e.kind(), upsvisor_core::ErrorKind::NotFound);
        let e = command_sets(
            Mib::UpsMib,
            &DeviceCommand::OutletOn { outlet: "1".into() },
            CommandOptions::default(),
        )
        .unwrap_err();
        assert_eq!(e.kind(), upsvisor_core::ErrorKind::Unsupported);
        let sets = command_sets(
            Mib::ApcUps,
            &DeviceCommand::ShutdownReturn {
                delay: Duration::from_secs(20),
            },
            CommandOptions::default(),
        )
        .unwrap();
        assert_eq!(sets.len(), 2);
        assert_eq!(sets[0][0].value, Value::TimeTicks(2000));
        assert_eq!(sets[1][0].value, Value::Integer(2));
    }
}
