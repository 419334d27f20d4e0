//! [`PowerDevice`]: a UPS, PDU or anything else that feeds hosts.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::Result;
use crate::model::OutletId;

/// A status token, named as NUT names them in `ups.status`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum StatusToken {
    /// On line (mains present).
    OL,
    /// On battery.
    OB,
    /// Low battery.
    LB,
    /// High battery.
    HB,
    /// Replace battery.
    RB,
    /// Charging.
    CHRG,
    /// Discharging.
    DISCHRG,
    /// On bypass.
    BYPASS,
    /// Calibrating.
    CAL,
    /// Output off.
    OFF,
    /// Overloaded.
    OVER,
    /// Trimming (voltage too high).
    TRIM,
    /// Boosting (voltage too low).
    BOOST,
    /// Forced shutdown.
    FSD,
    /// An alarm is active.
    ALARM,
    /// Anything else, kept verbatim.
    Other(String),
}

impl StatusToken {
    /// Parses one token; unknown ones are kept as [`StatusToken::Other`].
    pub fn parse(s: &str) -> StatusToken {
        match s {
            "OL" => StatusToken::OL,
            "OB" => StatusToken::OB,
            "LB" => StatusToken::LB,
            "HB" => StatusToken::HB,
            "RB" => StatusToken::RB,
            "CHRG" => StatusToken::CHRG,
            "DISCHRG" => StatusToken::DISCHRG,
            "BYPASS" => StatusToken::BYPASS,
            "CAL" => StatusToken::CAL,
            "OFF" => StatusToken::OFF,
            "OVER" => StatusToken::OVER,
            "TRIM" => StatusToken::TRIM,
            "BOOST" => StatusToken::BOOST,
            "FSD" => StatusToken::FSD,
            "ALARM" => StatusToken::ALARM,
            other => StatusToken::Other(other.to_owned()),
        }
    }

    /// Parses a whitespace-separated `ups.status` value.
    pub fn parse_list(s: &str) -> Vec<StatusToken> {
        s.split_whitespace().map(StatusToken::parse).collect()
    }
}

impl fmt::Display for StatusToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StatusToken::Other(s) => f.write_str(s),
            t => write!(f, "{t:?}"),
        }
    }
}

/// Where the load's power comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum PowerSource {
    /// Mains.
    OnLine,
    /// Battery.
    OnBattery,
    /// Bypass (mains, unprotected).
    Bypass,
    /// Output off.
    Off,
    /// Not known.
    #[default]
    Unknown,
}

/// One outlet's state.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct OutletStatus {
    /// Outlet id.
    pub id: OutletId,
    /// Whether it is powered, if known.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub on: Option<bool>,
    /// Whether it can be switched.
    pub switchable: bool,
    /// Name or description, if the device gives one.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub name: Option<String>,
}

impl OutletStatus {
    /// An outlet status.
    pub fn new(id: impl Into<OutletId>, on: Option<bool>, switchable: bool) -> Self {
        OutletStatus {
            id: id.into(),
            on,
            switchable,
            name: None,
        }
    }
}

/// A power device's status. Values a device did not report are `None`,
/// never zero.
#[derive(Debug, Clone, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct PowerStatus {
    /// Where the load's power comes from.
    pub source: PowerSource,
    /// Low battery.
    pub low_battery: bool,
    /// Forced shutdown in progress.
    pub fsd: bool,
    /// Battery charge, percent.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub charge_pct: Option<f32>,
    /// Estimated runtime on battery, seconds.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub runtime_s: Option<u32>,
    /// Output load, percent of capacity.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub load_pct: Option<f32>,
    /// Every status token the device reported.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Vec::is_empty")
    )]
    pub tokens: Vec<StatusToken>,
    /// Outlets.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Vec::is_empty")
    )]
    pub outlets: Vec<OutletStatus>,
    /// The device's data is known to be out of date (NUT's DATA-STALE).
    #[cfg_attr(feature = "serde", serde(default))]
    pub stale: bool,
    /// Readings that contradict each other (see [`StatusWarning`]). They
    /// are for publishing as alerts; no trigger acts on them.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Vec::is_empty")
    )]
    pub warnings: Vec<StatusWarning>,
}

impl PowerStatus {
    /// A status built from NUT-style tokens: `OB` means on battery, `OFF`
    /// output off, `BYPASS` bypass, `OL` on line; `LB` and `FSD` set their
    /// flags. When a device reports both OL and OB (some do, briefly), OB wins:
    /// the unsafe reading is the one to act on.
    pub fn from_tokens(tokens: Vec<StatusToken>) -> Self {
        let has = |t: StatusToken| tokens.contains(&t);
        let source = if has(StatusToken::OB) {
            PowerSource::OnBattery
        } else if has(StatusToken::OFF) {
            PowerSource::Off
        } else if has(StatusToken::BYPASS) {
            PowerSource::Bypass
        } else if has(StatusToken::OL) {
            PowerSource::OnLine
        } else {
            PowerSource::Unknown
        };
        PowerStatus {
            source,
            low_battery: has(StatusToken::LB),
            fsd: has(StatusToken::FSD),
            tokens,
            ..PowerStatus::default()
        }
    }

    /// Whether the device runs on battery.
    pub fn on_battery(&self) -> bool {
        self.source == PowerSource::OnBattery
    }

    /// Adds a [`StatusWarning::RuntimeBelowCharge`] when `runtime_s` is an
    /// order of magnitude below what `charge_pct` allows: with at least
    /// 20 % charge, a runtime under 1.2 s per percent (under two minutes
    /// at full charge, where UPSes are sized for 5 to 15 minutes at full
    /// load). That
    /// is what a device reporting minutes where seconds are expected, or
    /// elapsed time on battery where the remaining time is expected, looks
    /// like. Nothing is changed but the warning list.
    pub fn check_runtime(&mut self) {
        let (Some(rt), Some(charge)) = (self.runtime_s, self.charge_pct) else {
            return;
        };
        // rt < 1.2 s per percent, in integers-as-floats so 120 s at 100 % is
        // not flagged by rounding.
        if charge >= 20.0 && f64::from(rt) * 5.0 < 6.0 * f64::from(charge) {
            self.warnings.push(StatusWarning::RuntimeBelowCharge {
                runtime_s: rt,
                charge_pct: charge,
            });
        }
    }

    /// Adds a [`StatusWarning::RuntimeCountsUp`] when, on battery in both
    /// `previous` and `self` (read `elapsed` apart, at least 5 s), the
    /// runtime rose by about the time that passed (within 20 %) while the
    /// charge did not rise: a clock of time on battery, not a remaining
    /// runtime. A drop in load raises the runtime too, but not in step
    /// with the clock.
    pub fn check_runtime_trend(&mut self, previous: &PowerStatus, elapsed: Duration) {
        let (Some(before), Some(now)) = (previous.runtime_s, self.runtime_s) else {
            return;
        };
        if !(self.on_battery() && previous.on_battery()) || elapsed < Duration::from_secs(5) {
            return;
        }
        if let (Some(c0), Some(c1)) = (previous.charge_pct, self.charge_pct) {
            if c1 > c0 {
                return;
            }
        }
        let rise = f64::from(now) - f64::from(before);
        let e = elapsed.as_secs_f64();
        if rise >= 0.8 * e && rise <= 1.2 * e {
            self.warnings.push(StatusWarning::RuntimeCountsUp {
                from_s: before,
                to_s: now,
                elapsed_s: elapsed.as_secs(),
            });
        }
    }
}

/// A reading that contradicts the rest of the status. Published, never
/// acted on: a device with a plausible runtime and a wrong unit still has
/// its low-battery flag and charge.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case", tag = "warning"))]
#[non_exhaustive]
pub enum StatusWarning {
    /// The runtime is an order of magnitude below what the charge allows
    /// (see [`PowerStatus::check_runtime`]).
    RuntimeBelowCharge {
        /// Runtime reported, seconds.
        runtime_s: u32,
        /// Charge reported, percent.
        charge_pct: f32,
    },
    /// On battery, the runtime rose in step with the clock (see
    /// [`PowerStatus::check_runtime_trend`]).
    RuntimeCountsUp {
        /// Runtime at the earlier reading, seconds.
        from_s: u32,
        /// Runtime now, seconds.
        to_s: u32,
        /// Time between the readings, seconds.
        elapsed_s: u64,
    },
}

impl fmt::Display for StatusWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StatusWarning::RuntimeBelowCharge {
                runtime_s,
                charge_pct,
            } => write!(
                f,
                "runtime {runtime_s} s is implausibly short for {charge_pct} % charge (minutes reported as seconds, or elapsed time as remaining?)"
            ),
            StatusWarning::RuntimeCountsUp {
                from_s,
                to_s,
                elapsed_s,
            } => write!(
                f,
                "runtime rose from {from_s} s to {to_s} s in {elapsed_s} s on battery (elapsed time reported as remaining?)"
            ),
        }
    }
}

/// A command to a power device.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case", tag = "command"))]
#[non_exhaustive]
pub enum DeviceCommand {
    /// Switch an outlet on.
    OutletOn {
        /// Which.
        outlet: OutletId,
    },
    /// Switch an outlet off, after `delay`.
    OutletOff {
        /// Which.
        outlet: OutletId,
        /// Delay before switching (zero: now).
        #[cfg_attr(feature = "serde", serde(with = "secs"))]
        delay: Duration,
    },
    /// Turn the output off after `delay` and back on when mains returns
    /// (NUT `shutdown.return`).
    ShutdownReturn {
        /// Delay before the output goes off.
        #[cfg_attr(feature = "serde", serde(with = "secs"))]
        delay: Duration,
    },
    /// Turn the output off after `delay` and keep it off (NUT
    /// `shutdown.stayoff`).
    ShutdownStayOff {
        /// Delay before the output goes off.
        #[cfg_attr(feature = "serde", serde(with = "secs"))]
        delay: Duration,
    },
    /// Cancel a pending shutdown.
    CancelShutdown,
    /// Raise the forced-shutdown flag for every client of the device.
    SetFsd,
}

#[cfg(feature = "serde")]
mod secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

/// What a device can do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct DeviceCapabilities {
    /// Outlets that can be switched.
    pub switchable_outlets: Vec<OutletId>,
    /// `ShutdownReturn` works.
    pub shutdown_return: bool,
    /// `ShutdownStayOff` works.
    pub shutdown_stayoff: bool,
    /// `SetFsd` works.
    pub set_fsd: bool,
}

/// A power device: UPS, PDU, or a composite of several.
#[async_trait]
pub trait PowerDevice: Send + Sync {
    /// Current status. An unreachable device is an error, never an
    /// invented on-line status.
    async fn status(&self) -> Result<PowerStatus>;

    /// What commands work.
    async fn capabilities(&self) -> Result<DeviceCapabilities>;

    /// Runs a command.
    async fn command(&self, cmd: DeviceCommand) -> Result<()>;

    /// Every host this device feeds is down: stop holding the device's
    /// other clients back. NUT: `LOGOUT`, so a primary upsmon that raised
    /// `FSD` cuts power at once instead of waiting out its `HOSTSYNC`.
    /// Default: nothing to do.
    async fn detach(&self) -> Result<()> {
        Ok(())
    }

    /// The hosts are back (a restore finished): be counted again. NUT:
    /// `LOGIN` as a upsmon secondary. Default: nothing to do.
    async fn attach(&self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_map_to_source() {
        let s = PowerStatus::from_tokens(StatusToken::parse_list("OB DISCHRG LB"));
        assert_eq!(s.source, PowerSource::OnBattery);
        assert!(s.low_battery);
        assert!(!s.fsd);
        let s = PowerStatus::from_tokens(StatusToken::parse_list("OL CHRG WEIRD"));
        assert_eq!(s.source, PowerSource::OnLine);
        assert_eq!(s.tokens[2], StatusToken::Other("WEIRD".into()));
        let s = PowerStatus::from_tokens(StatusToken::parse_list("FSD OB LB"));
        assert!(s.fsd);
        assert_eq!(
            PowerStatus::from_tokens(vec![]).source,
            PowerSource::Unknown
        );
        assert_eq!(StatusToken::DISCHRG.to_string(), "DISCHRG");
    }

    #[test]
    fn runtime_plausibility() {
        let mut s = PowerStatus::from_tokens(StatusToken::parse_list("OL"));
        s.charge_pct = Some(100.0);
        s.runtime_s = Some(72); // 72 minutes reported as seconds
        s.check_runtime();
        assert!(matches!(
            s.warnings.as_slice(),
            [StatusWarning::RuntimeBelowCharge { runtime_s: 72, .. }]
        ));
        assert!(s.warnings[0].to_string().contains("72 s"));
        for (charge, rt) in [(100.0, 300), (15.0, 5), (50.0, 70)] {
            let mut s = PowerStatus {
                charge_pct: Some(charge),
                runtime_s: Some(rt),
                ..PowerStatus::default()
            };
            s.check_runtime();
            assert!(s.warnings.is_empty(), "{charge} % / {rt} s");
        }
        let mut s = PowerStatus {
            runtime_s: Some(1),
            ..PowerStatus::default()
        };
        s.check_runtime();
        assert!(s.warnings.is_empty(), "no charge: nothing to compare");

        let ob = |rt: u32, charge: f32| {
            let mut s = PowerStatus::from_tokens(StatusToken::parse_list("OB"));
            s.runtime_s = Some(rt);
            s.charge_pct = Some(charge);
            s
        };
        let mut now = ob(130, 90.0);
        now.check_runtime_trend(&ob(100, 92.0), Duration::from_secs(30));
        assert!(matches!(
            now.warnings.as_slice(),
            [StatusWarning::RuntimeCountsUp {
                from_s: 100,
                to_s: 130,
                elapsed_s: 30
            }]
        ));
        // Load dropped: the runtime jumped, not in step with the clock.
        let mut now = ob(900, 90.0);
        now.check_runtime_trend(&ob(300, 92.0), Duration::from_secs(30));
        assert!(now.warnings.is_empty());
        // Falling runtime, or on line: nothing.
        let mut now = ob(270, 90.0);
        now.check_runtime_trend(&ob(300, 92.0), Duration::from_secs(30));
        assert!(now.warnings.is_empty());
        let mut now = PowerStatus::from_tokens(StatusToken::parse_list("OL"));
        now.runtime_s = Some(130);
        now.check_runtime_trend(&ob(100, 92.0), Duration::from_secs(30));
        assert!(now.warnings.is_empty());
    }

    #[cfg(feature = "serde")]
    #[test]
    fn command_json() {
        let c = DeviceCommand::ShutdownReturn {
            delay: Duration::from_secs(30),
        };
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"command":"shutdown_return","delay":30}"#
        );
    }
}
