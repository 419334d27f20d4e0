//! Stopping, host side: hosts once their VMs are down (maintenance, the
//! remedies for refusals, forced deadlines), and this controller's own
//! host last.

#[allow(unused_imports)]
use super::*;

impl Sequencer {
    /// Host stage; true when every host of it is down or given up.
    pub(super) fn step_hosts(
        &mut self,
        now: Instant,
        e: &mut Episode,
        table: &VmTable,
        view: &PowerView,
        management: bool,
        out: &mut Vec<Issued>,
    ) -> bool {
        // A host whose VMs are unknown now may hold management VMs: it
        // goes with the management hosts.
        let mgmt_on = |h: &HostId| {
            !knows_vms_now(table, h)
                || table.host(h).is_some_and(|r| {
                    r.vms_on()
                        .any(|v| self.cfg.group_props(self.cfg.group_of(v)).2)
                })
        };
        let own = self.own_host(e, table);
        let hosts: Vec<HostId> = e
            .scope
            .iter()
            .filter(|h| management || !mgmt_on(h))
            .filter(|h| Some(*h) != own.as_ref())
            .cloned()
            .collect();
        let mut settled = true;
        for h in hosts {
            let settled_before = settled;
            let Some(track) = e.hosts.get(&h).cloned() else {
                continue;
            };
            if !self.cfg.shutdown_hosts {
                if let Some(t) = e.hosts.get_mut(&h) {
                    t.st = HostSt::Skipped;
                }
                continue;
            }
            // A troubled host holds only the management hosts' stage (the
            // last before the power-device action).
            let holds = management || !track.troubled;
            match track.st {
                HostSt::Down | HostSt::Failed { .. } | HostSt::Skipped => continue,
                HostSt::ShutdownSent { at } => {
                    if seen_down(table, &h, at, self.cfg.observe_lag) {
                        if let Some(t) = e.hosts.get_mut(&h) {
                            t.st = HostSt::Down;
                        }
                        continue;
                    }
                    // Halting: the next stage may begin after the expected
                    // halt time, but power waits until it is seen down
                    // (see `step_final`).
                    if now < at + self.cfg.host_down_wait {
                        settled &= !holds;
                    }
                    continue;
                }
                HostSt::MaintSent => {
                    settled &= !holds;
                    continue;
                }
                HostSt::Up | HostSt::InMaint => {}
            }
            settled &= !holds;
            if track.retry_at.is_some_and(|r| r > now)
                || e.in_flight.values().any(|c| c.host() == Some(&h))
            {
                continue;
            }
            // A host that did not answer the latest poll has VMs nobody
            // knows now (one may have started or migrated in): it waits like
            // a host with VMs on. Only a fresh list is evidence of "none".
            let blocking: Vec<String> = table
                .host(&h)
                .filter(|r| r.is_fresh())
                .map(|r| {
                    r.vms_on()
                        .filter(|v| {
                            // Trust our own power-off over an older table.
                            !e.vms.get(&v.id).is_some_and(|t| {
                                t.st == VmSt::Off && t.off_at.is_some_and(|o| o >= table.taken_at)
                            })
                        })
                        .map(|v| v.name.clone())
                        .collect()
                })
                .unwrap_or_else(|| vec![format!("(unknown: {h} is not answering)")]);
            let mut forced = track.forced;
            if blocking.is_empty() && !forced {
                // Confirm with a newer table before an irreversible shutdown
                // (a host in maintenance mode takes no new VMs: no need).
                let via_maintenance = self.cfg.use_maintenance
                    && !track.no_maint
                    && self.can_host(&h, HostOp::EnterMaintenance);
                if track.st == HostSt::Up && !via_maintenance {
                    match track.empty_since {
                        // A recent table: the older the confirming list,
                        // the wider the window for a VM to move in.
                        Some(t0)
                            if table.taken_at > t0 && now <= table.taken_at + CONFIRM_MAX_AGE => {}
                        Some(t0) if table.taken_at > t0 => {
                            self.poll_wanted = true;
                            continue;
                        }
                        Some(_) => {
                            self.poll_wanted = true;
                            continue;
                        }
                        None => {
                            if let Some(t) = e.hosts.get_mut(&h) {
                                t.empty_since = Some(table.taken_at);
                            }
                            self.poll_wanted = true;
                            continue;
                        }
                    }
                }
            } else if !blocking.is_empty() {
                if let Some(t) = e.hosts.get_mut(&h) {
                    t.empty_since = None;
                }
            }
            if !blocking.is_empty() && !forced {
                let due = self.cfg.force_host_after.map(|f| e.started + f);
                let battery = self.host_budget_gone(view);
                if due.is_some_and(|d| now >= d) || battery.is_some() {
                    forced = true;
                    let why = match battery {
                        Some(rt) => {
                            format!("the battery's {rt} s left only cover the host's own shutdown")
                        }
                        None => "forced deadline reached".into(),
                    };
                    let reason = format!(
                        "{why} with {} VM(s) still on: {}",
                        blocking.len(),
                        blocking.join(", ")
                    );
                    self.push(
                        now,
                        e.id,
                        Audit::ForcedHostShutdown {
                            host: h.clone(),
                            reason,
                        },
                    );
                    if let Some(t) = e.hosts.get_mut(&h) {
                        t.forced = true;
                    }
                } else {
                    continue;
                }
            }
            if !self.can_host(&h, HostOp::Shutdown) {
                // Nothing to send: the host stays up, as an `Unsupported`
                // answer would leave it, and nothing waits for it.
                let error = format!("{h}: its transport cannot shut the host down");
                if let Some(t) = e.hosts.get_mut(&h) {
                    t.st = HostSt::Failed {
                        error: error.clone(),
                    };
                }
                self.note(now, e.id, format!("{error}; it stays up"));
                continue;
            }
            let maint_next = (self.cfg.use_maintenance || track.needs_maint)
                && track.st == HostSt::Up
                && !track.no_maint
                && !forced
                && self.can_host(&h, HostOp::EnterMaintenance);
            // The shutdown order (`after`): maintenance mode may come
            // first, the shutdown waits. A waiting host does not hold the
            // stage of hosts without management VMs (what it waits for may
            // be a management host); it is taken up again with the
            // management hosts, whose stage it does hold.
            if !maint_next && !forced {
                let waiting = self.waiting_for(e, &h, own.as_ref(), now);
                // The wait yields to the same deadlines as VMs do: the
                // forced deadline, or a battery that only covers this
                // host's own shutdown (else a host with no VMs, a NAS,
                // could wait for a silent hypervisor until the battery is
                // flat).
                let due = self.cfg.force_host_after.map(|f| e.started + f);
                let battery = self.host_budget_gone(view);
                if !waiting.is_empty() && (due.is_some_and(|d| now >= d) || battery.is_some()) {
                    let why = match battery {
                        Some(rt) => {
                            format!("the battery's {rt} s left only cover the host's own shutdown")
                        }
                        None => "forced deadline reached".into(),
                    };
                    let names: Vec<&str> = waiting.iter().map(HostId::as_str).collect();
                    self.push(
                        now,
                        e.id,
                        Audit::ForcedHostShutdown {
                            host: h.clone(),
                            reason: format!(
                                "{why}: not waiting any longer for {}, which it shuts down after",
                                names.join(", ")
                            ),
                        },
                    );
                    if let Some(t) = e.hosts.get_mut(&h) {
                        t.forced = true;
                    }
                } else if !waiting.is_empty() {
                    if !management {
                        settled = settled_before;
                    }
                    if let Some(t) = e.hosts.get_mut(&h).filter(|t| !t.order_said) {
                        t.order_said = true;
                        let names: Vec<&str> = waiting.iter().map(HostId::as_str).collect();
                        self.note(
                            now,
                            e.id,
                            format!(
                                "{h} shuts down after {}: waiting for them to go down",
                                names.join(", ")
                            ),
                        );
                    }
                    continue;
                }
            }
            // Its hooks run before the shutdown (after maintenance mode);
            // a blocking one holds this host only.
            if !maint_next {
                let point = HookPoint::BeforeHostShutdown { host: h.clone() };
                if !self.hook_gate(now, e, view, &point, Holds::Host, out) {
                    // (Like a host waiting for its `after` list, it does
                    // not hold the stage of hosts without management VMs;
                    // the management hosts' stage waits for it.)
                    if !management {
                        settled = settled_before;
                    }
                    continue;
                }
            }
            let op = if maint_next {
                if let Some(t) = e.hosts.get_mut(&h) {
                    t.st = HostSt::MaintSent;
                }
                HostOp::EnterMaintenance
            } else {
                // A host shutdown cannot be called back: whatever the
                // configured commit point, the episode is committed now.
                e.committed = true;
                if let Some(t) = e.hosts.get_mut(&h) {
                    t.st = HostSt::ShutdownSent { at: now };
                }
                HostOp::Shutdown
            };
            self.issue(
                now,
                e,
                Command::Host {
                    host: h.clone(),
                    op,
                },
                out,
            );
        }
        settled
    }

    /// The hosts of `h`'s `after` list it still waits for: in this
    /// episode, not this controller's own host (always last), and neither
    /// down, given up, nor past their expected halt time since their
    /// shutdown was sent (a hung host costs only its own wait).
    fn waiting_for(
        &self,
        e: &Episode,
        h: &HostId,
        own: Option<&HostId>,
        now: Instant,
    ) -> Vec<HostId> {
        let Some(entry) = self.inventory.host(h) else {
            return Vec::new();
        };
        entry
            .after
            .iter()
            .filter(|p| Some(*p) != own)
            .filter(|p| match e.hosts.get(*p).map(|t| &t.st) {
                None | Some(HostSt::Down | HostSt::Failed { .. } | HostSt::Skipped) => false,
                Some(HostSt::ShutdownSent { at }) => now < *at + self.cfg.host_down_wait,
                Some(_) => true,
            })
            .cloned()
            .collect()
    }

    /// The runtime left, when it only covers the hosts' own shutdown:
    /// waiting any longer for VMs means the battery, not the host, stops
    /// them. A host shut down for this reason is logged as forced.
    pub(super) fn host_budget_gone(&self, view: &PowerView) -> Option<u32> {
        let rt = view.runtime_s?;
        (Duration::from_secs(u64::from(rt)) <= self.cfg.host_down_wait).then_some(rt)
    }

    /// The host this controller's own VM runs on, when configured and in
    /// this episode's scope.
    pub(super) fn own_host(&self, e: &Episode, table: &VmTable) -> Option<HostId> {
        self.cfg
            .controller_in(table)
            .filter(|(h, _)| e.scope.contains(*h))
            .map(|(h, _)| h.clone())
    }

    /// This controller's own host, after the power-device command was
    /// delivered: it is shut down with the controller's VM still on (its
    /// hypervisor stops that VM), which is audited as a forced decision.
    /// The controller normally dies here; nothing after it is needed.
    pub(super) fn step_own_host(
        &mut self,
        now: Instant,
        e: &mut Episode,
        table: &VmTable,
        out: &mut Vec<Issued>,
    ) -> bool {
        let Some(h) = self.own_host(e, table) else {
            return true;
        };
        if !self.cfg.shutdown_hosts {
            return true;
        }
        if !e.finals.iter().all(|f| f.done) {
            return false;
        }
        let Some(t) = e.hosts.get(&h).cloned() else {
            return true;
        };
        match t.st {
            HostSt::Up | HostSt::InMaint => {
                if e.in_flight.values().any(|c| c.host() == Some(&h))
                    || t.retry_at.is_some_and(|r| r > now)
                {
                    return false;
                }
                // The power-device command is sent: its cut comes whatever
                // a hook does, so nothing waits for this host's hooks.
                let point = HookPoint::BeforeHostShutdown { host: h.clone() };
                self.start_unwaited(now, e, &point, out);
                self.push(
                    now,
                    e.id,
                    Audit::ForcedHostShutdown {
                        host: h.clone(),
                        reason: "this controller's own host, shut down last after the power-device command: its hypervisor stops this controller's VM with it".into(),
                    },
                );
                e.committed = true;
                if let Some(t) = e.hosts.get_mut(&h) {
                    t.st = HostSt::ShutdownSent { at: now };
                    t.forced = true;
                    // Maintenance mode cannot be entered under a running
                    // VM (this controller's): never try it here.
                    t.no_maint = true;
                }
                self.issue(
                    now,
                    e,
                    Command::Host {
                        host: h,
                        op: HostOp::ShutdownForce,
                    },
                    out,
                );
                false
            }
            HostSt::ShutdownSent { at } => {
                seen_down(table, &h, at, self.cfg.observe_lag)
                    || now >= at + self.cfg.host_down_wait
            }
            HostSt::Failed { error } => {
                // The device command is out: its delayed cut comes whatever
                // happens now, under a host that still answers.
                if !t.cut_logged && e.finals.iter().any(|f| f.cut_at().is_some()) {
                    if let Some(t) = e.hosts.get_mut(&h) {
                        t.cut_logged = true;
                    }
                    self.push(
                        now,
                        e.id,
                        Audit::ForcedPowerCut {
                            host: h,
                            reason: format!("this controller's own host refused its forced shutdown ({error}); the power-device command already sent cuts power under it"),
                        },
                    );
                }
                true
            }
            _ => true,
        }
    }
}
