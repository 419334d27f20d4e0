//! Stopping, last: the power-device actions (shutdown-with-return,
//! outlets off) and the forced decisions logged before a cut.

#[allow(unused_imports)]
use super::*;

impl Sequencer {
    /// The power-device stage; once it is done, the devices feeding the
    /// episode's hosts are detached (their hosts are down or forced).
    pub(super) fn step_final(
        &mut self,
        now: Instant,
        e: &mut Episode,
        table: &VmTable,
        view: &PowerView,
        out: &mut Vec<Issued>,
    ) -> bool {
        // A live test of a host commands no power device and leaves the
        // device's clients alone: no detach (a NUT LOGOUT), no cut.
        if e.test_host.is_some() {
            return true;
        }
        let done = self.step_final_actions(now, e, table, view, out);
        if done {
            let devices: BTreeSet<DeviceId> = self
                .inventory
                .outlets
                .iter()
                .filter(|o| o.hosts.iter().any(|h| e.scope.contains(h)))
                .map(|o| o.device.clone())
                .collect();
            for device in devices {
                if e.detached.insert(device.clone()) {
                    self.issue(now, e, Command::Detach { device }, out);
                }
            }
        }
        done
    }

    pub(super) fn step_final_actions(
        &mut self,
        now: Instant,
        e: &mut Episode,
        table: &VmTable,
        view: &PowerView,
        out: &mut Vec<Issued>,
    ) -> bool {
        if e.finals.is_empty() && !e.in_flight.is_empty() {
            return false;
        }
        if e.finals.is_empty() && self.cfg.final_action != FinalAction::None {
            // Power is cut only under hosts seen down. A host still
            // answering is waited for, up to its deadline or until the
            // battery only covers the device's own delay; then the cut is a
            // logged, forced decision that names the host and why.
            let last_call = view.runtime_s.is_some_and(|rt| {
                Duration::from_secs(u64::from(rt)) <= self.cfg.final_delay() + BUDGET_MARGIN
            });
            let mut answering: Vec<(HostId, String)> = Vec::new();
            let mut wait = false;
            let own = self.own_host(e, table).filter(|_| self.cfg.shutdown_hosts);
            for (h, t) in &e.hosts {
                if !e.scope.contains(h) || Some(h) == own.as_ref() {
                    // (this controller's own host is shut down after the
                    // device command, by design)
                    continue;
                }
                // A host that was never shut down may well be running even
                // if it missed the latest poll: its cut is always logged.
                // Any other host is judged by whether it answers now.
                let never_shut = matches!(t.st, HostSt::Failed { .. } | HostSt::Skipped)
                    || (t.unconfirmed && matches!(t.st, HostSt::ShutdownSent { .. }));
                if !never_shut && !knows_vms_now(table, h) {
                    continue; // silent: not seen answering
                }
                let why = match &t.st {
                    HostSt::Down => "it answers again after it was seen going down".into(),
                    HostSt::ShutdownSent { at } => {
                        if seen_down(table, h, *at, self.cfg.observe_lag) {
                            continue;
                        }
                        if now < *at + self.cfg.host_down_deadline && !last_call {
                            wait = true;
                            continue;
                        }
                        if knows_vms_now(table, h) {
                            format!(
                                "still answering {} s after its shutdown was sent",
                                (now - *at).as_secs()
                            )
                        } else {
                            format!(
                                "its shutdown call timed out {} s ago and it has been silent since it was sent: it may still be running",
                                (now - *at).as_secs()
                            )
                        }
                    }
                    HostSt::Failed { error } => format!("its shutdown failed: {error}"),
                    HostSt::Skipped => "host shutdown is off in the configuration".into(),
                    _ => "it was not shut down".into(),
                };
                answering.push((h.clone(), why));
            }
            if wait {
                return false;
            }
            for (host, why) in answering {
                let reason = if last_call {
                    format!("{why}; the battery only covers the device's own delay")
                } else {
                    why
                };
                // (Named once: `log_cuts_ahead` does not name it again.)
                if let Some(t) = e.hosts.get_mut(&host) {
                    t.cut_logged = true;
                }
                self.push(now, e.id, Audit::ForcedPowerCut { host, reason });
            }
        }
        if e.finals.is_empty() {
            e.committed = true;
            let own = self.own_host(e, table);
            let mains_back = !view.on_battery && view.at_risk.is_empty();
            let devices: BTreeSet<DeviceId> = self
                .inventory
                .outlets
                .iter()
                .filter(|o| o.hosts.iter().any(|h| e.scope.contains(h)))
                .map(|o| o.device.clone())
                .filter(|d| view.unhealthy.contains(d) || e.devices.contains(d) || mains_back)
                .collect();
            for d in devices {
                let outlets: Vec<crate::model::Outlet> = self
                    .inventory
                    .outlets
                    .iter()
                    .filter(|o| o.device == d)
                    .cloned()
                    .collect();
                let whole = outlets
                    .iter()
                    .all(|o| o.hosts.iter().all(|h| e.scope.contains(h)));
                let ours: Vec<OutletId> = outlets
                    .iter()
                    .filter(|o| !o.hosts.is_empty() && o.hosts.iter().all(|h| e.scope.contains(h)))
                    .map(|o| o.id.clone())
                    .collect();
                let mut cmds = Vec::new();
                // This controller's own host is shut down after this
                // command: its delay must cover that shutdown.
                let feeds_own = own
                    .as_ref()
                    .is_some_and(|h| outlets.iter().any(|o| o.hosts.contains(h)));
                // A host may take many minutes to halt (ESXi stops its VMs
                // first): the delay is stretched towards the deadline other
                // hosts get (`host_down_deadline`), as far as the runtime
                // left allows.
                let cfg = self.cfg.clone();
                let own_delay =
                    |delay: Duration| {
                        let base = cfg.own_host_delay(delay);
                        match view.runtime_s {
                            Some(rt) => base.max(cfg.host_down_deadline.min(
                                Duration::from_secs(u64::from(rt)).saturating_sub(BUDGET_MARGIN),
                            )),
                            None => base,
                        }
                    };
                let final_action = match self.cfg.final_action {
                    FinalAction::ShutdownReturn { delay } if feeds_own => {
                        FinalAction::ShutdownReturn {
                            delay: own_delay(delay),
                        }
                    }
                    FinalAction::ShutdownStayOff { delay } if feeds_own => {
                        FinalAction::ShutdownStayOff {
                            delay: own_delay(delay),
                        }
                    }
                    // Nothing would switch an outlet back on under this
                    // controller's own host: the whole device cycles with
                    // return instead, or that outlet is left on.
                    FinalAction::OutletsOff { delay } if feeds_own && whole => {
                        self.note(now, e.id, format!("{d} feeds this controller's own host: shutdown-with-return instead of outlets off, so the estate gets power back"));
                        FinalAction::ShutdownReturn {
                            delay: own_delay(delay),
                        }
                    }
                    other => other,
                };
                // This controller stops with its own host and cannot watch
                // it halt: the delayed cut comes whether or not the host is
                // down by then. That is a forced decision, logged before
                // the command.
                if let (
                    Some(h),
                    FinalAction::ShutdownReturn { delay } | FinalAction::ShutdownStayOff { delay },
                ) = (
                    own.as_ref()
                        .filter(|_| feeds_own && self.cfg.shutdown_hosts),
                    &final_action,
                ) {
                    if let Some(t) = e.hosts.get_mut(h).filter(|t| !t.cut_logged) {
                        t.cut_logged = true;
                        let host = h.clone();
                        let reason = format!(
                            "this controller's own host is shut down after this command and stops this controller with it: the cut {} s later comes whether or not it has halted by then",
                            delay.as_secs()
                        );
                        self.push(now, e.id, Audit::ForcedPowerCut { host, reason });
                    }
                }
                let own_outlets: Vec<OutletId> = if feeds_own {
                    outlets
                        .iter()
                        .filter(|o| own.as_ref().is_some_and(|h| o.hosts.contains(h)))
                        .map(|o| o.id.clone())
                        .collect()
                } else {
                    Vec::new()
                };
                let ours: Vec<OutletId> = ours
                    .into_iter()
                    .filter(|o| !own_outlets.contains(o))
                    .collect();
                if !own_outlets.is_empty() && matches!(final_action, FinalAction::OutletsOff { .. })
                {
                    self.note(now, e.id, format!("{d}: outlets {own_outlets:?} feed this controller's own host and stay on (nothing could switch them back)"));
                }
                match final_action {
                    FinalAction::None => {}
                    FinalAction::ShutdownReturn { delay } if whole => {
                        cmds.push(DeviceCommand::ShutdownReturn { delay })
                    }
                    FinalAction::ShutdownStayOff { delay } if whole => {
                        if mains_back {
                            self.note(now, e.id, format!("mains is back: {d} gets shutdown-with-return instead of stay-off, so the hosts get power again"));
                            cmds.push(DeviceCommand::ShutdownReturn { delay });
                        } else {
                            cmds.push(DeviceCommand::ShutdownStayOff { delay });
                        }
                    }
                    FinalAction::ShutdownReturn { delay }
                    | FinalAction::ShutdownStayOff { delay }
                    | FinalAction::OutletsOff { delay } => {
                        if !whole && !matches!(final_action, FinalAction::OutletsOff { .. }) {
                            self.note(now, e.id, format!("{d} also feeds hosts outside this episode: switching only its outlets that feed this episode's hosts"));
                        }
                        cmds.extend(
                            ours.into_iter()
                                .map(|outlet| DeviceCommand::OutletOff { outlet, delay }),
                        );
                    }
                }
                e.finals.extend(cmds.into_iter().map(|cmd| FinalCmd {
                    device: d.clone(),
                    cmd,
                    sent: false,
                    done: false,
                    attempts: 0,
                    retry_at: None,
                    sent_at: None,
                }));
            }
            if e.finals.is_empty() {
                return true;
            }
        }
        let mut settled = true;
        for i in 0..e.finals.len() {
            let Some(f) = e.finals.get(i).cloned() else {
                continue;
            };
            if f.done {
                continue;
            }
            settled = false;
            if f.sent || f.retry_at.is_some_and(|r| r > now) {
                continue;
            }
            if let Some(f) = e.finals.get_mut(i) {
                f.sent = true;
                f.sent_at = Some(now);
            }
            self.issue(
                now,
                e,
                Command::Device {
                    device: f.device.clone(),
                    cmd: f.cmd.clone(),
                },
                out,
            );
        }
        settled
    }

    /// A delayed cut that this episode ordered happens whatever the hosts
    /// do meanwhile. A host in scope still answering shortly before it (its
    /// shutdown failed or hung, or it came back) is named in a
    /// `ForcedPowerCut` before the cut, once per host. (The engine steps at
    /// least every status interval, well inside the lead.)
    pub(super) fn log_cuts_ahead(&mut self, now: Instant, e: &mut Episode, table: &VmTable) {
        if matches!(e.phase, Phase::Restoring { .. }) {
            return;
        }
        let lead = self.cfg.observe_lag * 2;
        let Some(cut) = e
            .finals
            .iter()
            .filter(|f| f.sent)
            .filter_map(FinalCmd::cut_at)
            .filter(|c| *c >= now && now + lead >= *c)
            .min()
        else {
            return;
        };
        let mut named = Vec::new();
        for (h, t) in e.hosts.iter_mut() {
            if !e.scope.contains(h) || t.cut_logged || !knows_vms_now(table, h) {
                continue;
            }
            // (A host seen down that answers again is named too: it came
            // back, or it only failed to answer for a while.)
            if let HostSt::ShutdownSent { at } = t.st {
                if seen_down(table, h, at, self.cfg.observe_lag) {
                    continue;
                }
            }
            t.cut_logged = true;
            named.push(h.clone());
        }
        for host in named {
            self.push(
                now,
                e.id,
                Audit::ForcedPowerCut {
                    host,
                    reason: format!(
                        "still answering {} s before the cut the power-device command orders",
                        (cut - now).as_secs()
                    ),
                },
            );
        }
    }
}
