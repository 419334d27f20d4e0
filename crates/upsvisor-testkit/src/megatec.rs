//! A UPS speaking the Megatec (Q1) serial protocol on one end of a real
//! pty pair (`socat`), for tests where NUT's own `nutdrv_qx` driver (its
//! `megatec` subdriver) talks to it on the other end. `dummy-ups` offers
//! `load.off` only, so a real driver is the way to see `upsd` accept
//! `shutdown.return`.
//!
//! The protocol as modelled (Megatec "UPS communication protocol", as
//! NUT's `nutdrv_qx(8)` documents and reads it; every request ends in CR):
//! - `Q1` → `(MMM.M NNN.N PPP.P QQQ RR.R SS.S TT.T b7b6b5b4b3b2b1b0`:
//!   input voltage, input fault voltage, output voltage, load %,
//!   frequency, battery voltage, temperature, then the status bits
//!   (b7 utility fail, b6 battery low, b5 bypass/boost, b4 UPS failed,
//!   b3 line-interactive, b2 test in progress, b1 shutdown active,
//!   b0 beeper on);
//! - `F` → `#MMM.M QQQ SS.SS RR.R`: rated voltage, current, battery
//!   voltage, frequency (NUT guesses the charge from the battery voltage
//!   against this rating: 24 V nominal gives 20.8 V empty, 26 V full);
//! - `I` → `#` + company (15) + model (10) + version (10), space-padded;
//! - `S<n>R<mmmm>`: shut down in n minutes (`.2` .. `.9` are tenths: `.2`
//!   = 12 s; `01` .. `10` whole minutes), then restore the output mmmm
//!   minutes after mains is back; `R0000` stays off, and `S<n>` alone
//!   returns as soon as mains is there (this is how `nutdrv_qx` uses them:
//!   `shutdown.stayoff` sends `R0000`, `shutdown.return` with `ondelay =
//!   0` sends `S<n>` alone). No answer; b1 (shutdown active) is set until
//!   the output is back. The cut happens whether or not mains returned
//!   meanwhile (which is why NUT calls it `shutdown.return`: the load is
//!   power-cycled). `C` cancels a shutdown not yet carried out. While the
//!   output is off, Q1's output voltage reads 0.
//! - Any other request is echoed back, which is how these UPSes answer
//!   what they do not know.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{KillOnDrop, TempDir, require_peer};

#[derive(Debug, Default)]
struct State {
    on_battery: bool,
    low_battery: bool,
    battery_v: f32,
    shutdown_active: bool,
    /// When an ordered shutdown cuts the output.
    cut_at: Option<Instant>,
    /// After a cut: how long after mains is back the output returns
    /// (`None`: it stays off).
    return_after: Option<Duration>,
    /// When the output went off, if it is off.
    off_since: Option<Instant>,
    /// When mains last came back.
    mains_since: Option<Instant>,
    received: Vec<String>,
}

impl State {
    /// Carries out what time has made due: the cut, then the return.
    fn tick(&mut self, now: Instant) {
        if self.cut_at.is_some_and(|c| now >= c) {
            self.cut_at = None;
            self.off_since = Some(now);
        }
        if let (Some(off), Some(after), false) =
            (self.off_since, self.return_after, self.on_battery)
        {
            let from = self.mains_since.map_or(off, |m| m.max(off));
            if now >= from + after {
                self.off_since = None;
                self.return_after = None;
                self.shutdown_active = false;
            }
        }
    }

    /// `S<n>[R<mmmm>]` (`S` stripped): the delay and the return, or
    /// `None` when malformed (answered by echo, like an unknown request).
    fn parse_shutdown(arg: &str) -> Option<(Duration, Option<Duration>)> {
        let (n, r) = match arg.split_once('R') {
            Some((n, r)) => (n, Some(r)),
            None => (arg, None),
        };
        let delay = match n.strip_prefix('.') {
            Some(t) if t.len() == 1 => Duration::from_secs(6 * t.parse::<u64>().ok()?),
            None if n.len() == 2 => Duration::from_secs(60 * n.parse::<u64>().ok()?),
            _ => return None,
        };
        let ret = match r {
            Some("0000") => None,
            Some(m) if m.len() == 4 => Some(Duration::from_secs(60 * m.parse::<u64>().ok()?)),
            Some(_) => return None,
            None => Some(Duration::ZERO),
        };
        Some((delay, ret))
    }
}

/// The simulated UPS and its pty pair; the UPS answers on a thread until
/// the pty closes.
pub struct MegatecUps {
    st: Arc<Mutex<State>>,
    _socat: KillOnDrop,
    /// The pty end for the driver (a symlink to `/dev/pts/N`).
    pub tty: PathBuf,
    _dir: TempDir,
}

impl MegatecUps {
    /// Starts on line with a full 24 V battery. Missing `socat`: see
    /// [`require_peer`].
    pub fn start() -> Option<MegatecUps> {
        let socat = require_peer(&["socat"], "socat")?;
        let dir = TempDir::new("megatec");
        let (a, b) = (dir.path().join("tty"), dir.path().join("ups"));
        let child = Command::new(socat)
            .arg(format!("pty,raw,echo=0,link={}", a.display()))
            .arg(format!("pty,raw,echo=0,link={}", b.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn socat");
        let socat = KillOnDrop(child);
        let t0 = Instant::now();
        while !(a.exists() && b.exists()) {
            assert!(t0.elapsed() < Duration::from_secs(5), "socat made no ptys");
            std::thread::sleep(Duration::from_millis(20));
        }
        let st = Arc::new(Mutex::new(State {
            battery_v: 27.0,
            ..State::default()
        }));
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&b)
            .expect("open the UPS end of the pty");
        let s = st.clone();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 64];
            loop {
                let n = match f.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                buf.extend_from_slice(&chunk[..n]);
                while let Some(pos) = buf.iter().position(|&b| b == b'\r') {
                    let req: Vec<u8> = buf.drain(..=pos).take(pos).collect();
                    let reply = answer(&mut s.lock().expect("state"), &req, Instant::now());
                    if f.write_all(&reply).is_err() {
                        return;
                    }
                }
            }
        });
        Some(MegatecUps {
            st,
            _socat: socat,
            tty: a,
            _dir: dir,
        })
    }

    /// Mains fails (b7); `low` sets battery low (b6) with an almost empty
    /// battery (21.0 V).
    pub fn on_battery(&self, low: bool) {
        let mut s = self.st.lock().expect("state");
        s.on_battery = true;
        s.low_battery = low;
        s.battery_v = if low { 21.0 } else { 24.5 };
    }

    /// Mains returns, with a full battery (27.0 V).
    pub fn on_line(&self) {
        let mut s = self.st.lock().expect("state");
        if s.on_battery {
            s.mains_since = Some(Instant::now());
        }
        s.on_battery = false;
        s.low_battery = false;
        s.battery_v = 27.0;
    }

    /// Whether the output is off (cut by an ordered shutdown, not yet
    /// back).
    pub fn output_off(&self) -> bool {
        let mut s = self.st.lock().expect("state");
        s.tick(Instant::now());
        s.off_since.is_some()
    }

    /// Every request received, without its CR.
    pub fn received(&self) -> Vec<String> {
        self.st.lock().expect("state").received.clone()
    }
}

fn answer(s: &mut State, req: &[u8], now: Instant) -> Vec<u8> {
    s.tick(now);
    let text = String::from_utf8_lossy(req).into_owned();
    s.received.push(text.clone());
    match text.as_str() {
        "Q1" => {
            let bit = |b: bool| if b { '1' } else { '0' };
            let output = if s.off_since.is_some() { 0.0 } else { 230.0 };
            format!(
                "({:05.1} 000.0 {:05.1} 018 50.0 {:04.1} 25.0 {}{}0010{}0\r",
                if s.on_battery { 0.0 } else { 230.0 },
                output,
                s.battery_v,
                bit(s.on_battery),
                bit(s.low_battery),
                bit(s.shutdown_active),
            )
            .into_bytes()
        }
        "F" => b"#230.0 004 024.0 50.0\r".to_vec(),
        "I" => format!("#{:<15} {:<10} {:<10}\r", "SIM UPS Co.", "Q1-SIM", "V1.0").into_bytes(),
        "C" if s.off_since.is_none() => {
            s.cut_at = None;
            s.return_after = None;
            s.shutdown_active = false;
            Vec::new()
        }
        "C" => Vec::new(),
        t => match t.strip_prefix('S').and_then(State::parse_shutdown) {
            Some((delay, ret)) => {
                s.shutdown_active = true;
                s.cut_at = Some(now + delay);
                s.return_after = ret;
                Vec::new()
            }
            None => [req, b"\r"].concat(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_in_the_documented_shapes() {
        let t0 = Instant::now();
        let mut s = State {
            on_battery: true,
            low_battery: true,
            battery_v: 21.0,
            ..State::default()
        };
        assert_eq!(
            answer(&mut s, b"Q1", t0),
            b"(000.0 000.0 230.0 018 50.0 21.0 25.0 11001000\r"
        );
        assert_eq!(answer(&mut s, b"S.2R0000", t0), b"");
        assert!(answer(&mut s, b"Q1", t0).ends_with(b" 11001010\r"));
        assert_eq!(answer(&mut s, b"I", t0).len(), 1 + 15 + 1 + 10 + 1 + 10 + 1);
        assert_eq!(answer(&mut s, b"Q9", t0), b"Q9\r");
        assert_eq!(
            answer(&mut s, b"S.2R12", t0),
            b"S.2R12\r",
            "malformed: echoed"
        );
        assert_eq!(s.received, ["Q1", "S.2R0000", "Q1", "I", "Q9", "S.2R12"]);
    }

    #[test]
    fn a_shutdown_with_return_cuts_then_returns_once_mains_is_back() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut s = State {
            on_battery: true,
            battery_v: 21.0,
            ..State::default()
        };
        answer(&mut s, b"S.2R0001", t0);
        // Mains back before the cut: the cut happens anyway.
        s.on_battery = false;
        s.mains_since = Some(at(5));
        assert!(answer(&mut s, b"Q1", at(11)).starts_with(b"(230.0 000.0 230.0"));
        let q = answer(&mut s, b"Q1", at(12));
        assert!(q.starts_with(b"(230.0 000.0 000.0"), "{q:?}");
        // Back one minute after the cut (mains was already there).
        assert!(answer(&mut s, b"Q1", at(71)).ends_with(b"00001010\r"));
        let q = answer(&mut s, b"Q1", at(72));
        assert!(
            q.starts_with(b"(230.0 000.0 230.0") && q.ends_with(b" 00001000\r"),
            "{q:?}"
        );

        // Cancelled before the cut: nothing happens.
        answer(&mut s, b"S01", at(100));
        answer(&mut s, b"C", at(110));
        assert!(answer(&mut s, b"Q1", at(200)).ends_with(b" 00001000\r"));
        // `S<n>` alone: back as soon as mains is there (here at once).
        answer(&mut s, b"S.5", at(300));
        assert!(answer(&mut s, b"Q1", at(329)).ends_with(b" 00001010\r"));
        assert!(answer(&mut s, b"Q1", at(330)).ends_with(b" 00001000\r"));
        // R0000: stays off.
        answer(&mut s, b"S.5R0000", at(400));
        assert!(answer(&mut s, b"Q1", at(10_000)).starts_with(b"(230.0 000.0 000.0"));
    }
}
