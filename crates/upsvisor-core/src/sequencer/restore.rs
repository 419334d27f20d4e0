//! Restoring: outlets on, hosts answering, maintenance exited, then the
//! VMs this episode stopped, groups in reverse order.

#[allow(unused_imports)]
use super::*;

impl Sequencer {
    /// How long after an accepted power-on a fresh list must show the VM
    /// running: the platform's task (a call deadline) plus two polls.
    pub(super) fn start_confirm_wait(&self) -> Duration {
        self.cfg.call_deadline + self.cfg.observe_lag * 2
    }

    /// How often restore sends an out-of-band power-on to a host that does
    /// not answer: a host takes minutes to boot, and a magic packet or BMC
    /// request may be lost.
    pub(super) fn power_on_interval(&self) -> Duration {
        self.cfg.call_deadline.max(self.cfg.observe_lag * 4)
    }

    /// Whether restore brings host `h` back: this episode shut it down or
    /// cut its power, or an earlier one it took over from did. Never a
    /// host this episode did not take down.
    fn restore_takes_up(
        &self,
        e: &Episode,
        h: &HostId,
        t: &HostTrack,
        cut: Option<Instant>,
    ) -> bool {
        matches!(t.st, HostSt::Down | HostSt::ShutdownSent { .. })
            || t.taken_down_before
            || (cut.is_some() && e.scope.contains(h))
    }

    /// Restore; true when finished.
    pub(super) fn step_restore(
        &mut self,
        now: Instant,
        e: &mut Episode,
        table: &VmTable,
        view: &PowerView,
        out: &mut Vec<Issued>,
    ) -> bool {
        let index = table.index();
        let Phase::Restoring {
            since,
            outlets_on,
            group,
            group_since,
            wait_from,
        } = e.phase.clone()
        else {
            return true;
        };
        // A delayed cut this episode ordered (shutdown-with-return, outlets
        // off) happens whatever mains does meanwhile: nothing is started
        // before it, and hosts count as answering only after it.
        let cut = e
            .finals
            .iter()
            .filter(|f| f.sent || f.done)
            .filter_map(FinalCmd::cut_at)
            .max();
        // Power must be good now: mains that fails again (even before the
        // on-battery debounce), LB, or a pending cut pause the restore,
        // and its waits start again once power is good.
        if !view.mains_stable || cut.is_some_and(|c| c >= now) {
            if view.mains_back && !view.mains_stable && !e.held_noted {
                e.held_noted = true;
                self.note(now, e.id, "restore held: mains is back, but the battery is not ready for another outage (LB, charge under the gate, or no charge reading)".into());
            }
            if wait_from.is_none_or(|w| w < now) {
                e.phase = Phase::Restoring {
                    since,
                    outlets_on,
                    group,
                    group_since: None,
                    wait_from: Some(now),
                };
            }
            return false;
        }
        // (Time this controller was not running does not count: a restart
        // mid-restore, e.g. a controller inside the estate whose host the
        // cut took down too, left too little of a host's wait for its
        // out-of-band power-on and boot, seed 68725943.)
        let wait_from = wait_from
            .unwrap_or(since)
            .max(since)
            .max(self.resumed_at.unwrap_or(since));
        let answer_after = cut.map_or(since, |c| c.max(since));
        // Let stop commands still running finish first.
        if e.in_flight
            .values()
            .any(|c| matches!(c, Command::Vm { op, .. } if op.stops()))
        {
            return false;
        }
        // Judge only from a table taken since restore began.
        if table.taken_at < since {
            self.poll_wanted = true;
            return false;
        }
        if !outlets_on || !e.outlets_left_off.is_empty() {
            let mut offs: Vec<(DeviceId, OutletId)> = std::mem::take(&mut e.outlets_left_off);
            if !outlets_on {
                for f in e.finals.iter().filter(|f| f.done) {
                    if let DeviceCommand::OutletOff { outlet, .. } = &f.cmd {
                        let o = (f.device.clone(), outlet.clone());
                        if !offs.contains(&o) {
                            offs.push(o);
                        }
                    }
                }
            }
            for (device, outlet) in offs {
                self.issue(
                    now,
                    e,
                    Command::Device {
                        device,
                        cmd: DeviceCommand::OutletOn { outlet },
                    },
                    out,
                );
            }
            e.phase = Phase::Restoring {
                since,
                outlets_on: true,
                group,
                group_since,
                wait_from: Some(wait_from),
            };
        }
        // Hosts: wait for them to answer; exit maintenance. A host not
        // ready yet holds its own VMs (and, through group order, later
        // groups), never another host's: one host whose BMC refuses us
        // (a wrong password) or that is slow to boot does not keep the
        // VMs of the hosts that are back off for its whole restore wait.
        let mut not_ready: BTreeSet<HostId> = BTreeSet::new();
        // Hosts this episode took down that are not back yet and that
        // restore can still expect: powered on out of band, or cut by
        // the power device (a BIOS set to boot on power return). A host
        // that shuts down after others (`after`: storage after the
        // hypervisors using it) is powered on before them, as the
        // shutdown order read backwards: a hypervisor that boots before
        // its NFS or iSCSI datastore finds it missing and its VMs
        // inaccessible, which needs an operator to recover.
        let expected: BTreeSet<HostId> = e
            .hosts
            .iter()
            .filter(|(h, t)| {
                let method = self
                    .inventory
                    .hosts
                    .iter()
                    .any(|x| &x.id == *h && x.power_on);
                !t.lost
                    && self.restore_takes_up(e, h, t, cut)
                    && ((method && !t.no_power_on) || cut.is_some())
                    && !table.host(h).is_some_and(|r| {
                        r.is_fresh() && r.last_seen.is_some_and(|s| s > answer_after)
                    })
            })
            .map(|(h, _)| h.clone())
            .collect();
        let hosts: Vec<HostId> = e.hosts.keys().cloned().collect();
        for h in hosts {
            let Some(t) = e.hosts.get(&h).cloned() else {
                continue;
            };
            if t.lost {
                continue;
            }
            // A host with an out-of-band power-on whose shutdown was sent
            // and that no cut took down is halting until it is seen down (a
            // slow ESXi halt takes many minutes): its answers are not a
            // return, VMs started on it would be refused ("shutting down")
            // or lost as it halts, and once down it is powered on. Past
            // `host_down_deadline` still answering, it did not halt: back.
            // A host without a method is taken as back while it answers:
            // once halted nothing would bring it back, so starting its VMs
            // now is their best chance.
            let has_method = self.inventory.hosts.iter().any(|x| x.id == h && x.power_on);
            let mut t = t;
            if let HostSt::ShutdownSent { at } = t.st {
                if seen_down(table, &h, at, self.cfg.observe_lag) {
                    t.st = HostSt::Down;
                    t.halted_at = Some(now.max(wait_from));
                    if let Some(x) = e.hosts.get_mut(&h) {
                        x.st = HostSt::Down;
                        x.halted_at = t.halted_at;
                    }
                } else if has_method && cut.is_none() && now < at + self.cfg.host_down_deadline {
                    not_ready.insert(h.clone());
                    continue;
                }
            }
            let was_down =
                cut.is_some() || matches!(t.st, HostSt::Down | HostSt::ShutdownSent { .. });
            let answering = table.host(&h).is_some_and(|r| {
                r.is_fresh() && (!was_down || r.last_seen.is_some_and(|s| s > answer_after))
            });
            if !answering {
                // Storage first: its power-on waits while a host that
                // shuts down after it is expected back (see `expected`),
                // and the wait does not count against its own.
                let first: Vec<HostId> = self
                    .inventory
                    .hosts
                    .iter()
                    .filter(|x| x.after.contains(&h) && expected.contains(&x.id))
                    .map(|x| x.id.clone())
                    .collect();
                if !first.is_empty()
                    && has_method
                    && !t.no_power_on
                    && self.restore_takes_up(e, &h, &t, cut)
                {
                    if let Some(t) = e.hosts.get_mut(&h).filter(|t| !t.power_on_order_said) {
                        t.power_on_order_said = true;
                        let names: Vec<String> = first.iter().map(|x| x.to_string()).collect();
                        let names = names.join(", ");
                        self.note(
                            now,
                            e.id,
                            format!("{h} is powered on once {names} is back ({names} shuts down after {h})"),
                        );
                    }
                    not_ready.insert(h.clone());
                    continue;
                }
                if t.power_on_order_said && t.power_on_free_at.is_none() {
                    if let Some(x) = e.hosts.get_mut(&h) {
                        x.power_on_free_at = Some(now);
                    }
                }
            }
            // (A host that halted during restore, or whose power-on waited
            // for others, gets its whole wait.)
            let wait_from = t.halted_at.map_or(wait_from, |a| a.max(wait_from));
            let wait_from = e
                .hosts
                .get(&h)
                .and_then(|x| x.power_on_free_at)
                .map_or(wait_from, |a| a.max(wait_from));
            if !answering {
                // A host this episode shut down, or whose power it cut,
                // stays off unless something turns it on (a halted host on
                // a UPS that never cycled; a BIOS set to stay off after a
                // power loss): with an out-of-band method it is powered on,
                // again at intervals, until it answers or the restore wait
                // passes. Never a host this episode did not take down.
                if self.restore_takes_up(e, &h, &t, cut)
                    && has_method
                    && !t.no_power_on
                    && now < wait_from + self.cfg.restore_host_wait
                    && t.power_on_sent
                        .is_none_or(|s| now >= s + self.power_on_interval())
                    && !e.in_flight.values().any(|c| c.host() == Some(&h))
                {
                    if t.power_on_sent.is_none() {
                        self.note(
                            now,
                            e.id,
                            format!("{h} does not answer: powering it on out of band"),
                        );
                    }
                    if let Some(t) = e.hosts.get_mut(&h) {
                        t.power_on_sent = Some(now);
                    }
                    self.issue(
                        now,
                        e,
                        Command::Host {
                            host: h.clone(),
                            op: HostOp::PowerOn,
                        },
                        out,
                    );
                }
                if now >= wait_from + self.cfg.restore_host_wait {
                    if let Some(t) = e.hosts.get_mut(&h) {
                        t.lost = true;
                    }
                    self.note(
                        now,
                        e.id,
                        format!("{h} did not answer within the restore wait; its VMs stay off"),
                    );
                } else {
                    not_ready.insert(h.clone());
                }
                continue;
            }
            // An exit refused as unreachable is asked again (see
            // `results.rs`), within the host's restore wait: past it, the
            // host is left in maintenance and restore goes on, so one host
            // that answers polls but not commands holds no one else's VMs.
            if t.maint && !t.exit_maint_sent && now >= wait_from + self.cfg.restore_host_wait {
                if let Some(t) = e.hosts.get_mut(&h) {
                    t.maint = false;
                }
                self.note(
                    now,
                    e.id,
                    format!("{h}: maintenance mode could not be exited within the restore wait; its VMs may be refused"),
                );
                continue;
            }
            if t.maint && !t.exit_maint_sent {
                if t.retry_at.is_some_and(|r| r > now)
                    || e.in_flight.values().any(|c| c.host() == Some(&h))
                {
                    not_ready.insert(h.clone());
                    continue;
                }
                if let Some(t) = e.hosts.get_mut(&h) {
                    t.exit_maint_sent = true;
                }
                self.issue(
                    now,
                    e,
                    Command::Host {
                        host: h.clone(),
                        op: HostOp::ExitMaintenance,
                    },
                    out,
                );
                not_ready.insert(h.clone());
            } else if t.maint {
                not_ready.insert(h.clone()); // exit maintenance in flight
            }
        }
        // VMs, groups in reverse stop order.
        // The shutdown order read backwards: a host shut down after others
        // (`after`: storage after the hypervisors that use it) serves them,
        // so their VMs wait until it is back too, or given up (lost).
        let mut held: BTreeSet<HostId> = BTreeSet::new();
        let mut says: Vec<(HostId, HostId)> = Vec::new();
        for x in self
            .inventory
            .hosts
            .iter()
            .filter(|x| not_ready.contains(&x.id))
        {
            for p in &x.after {
                if e.hosts.get(p).is_some_and(|t| !t.lost) && !not_ready.contains(p) {
                    held.insert(p.clone());
                    says.push((p.clone(), x.id.clone()));
                }
            }
        }
        for (p, x) in says {
            if let Some(t) = e.hosts.get_mut(&p).filter(|t| !t.restore_order_said) {
                t.restore_order_said = true;
                self.note(
                    now,
                    e.id,
                    format!("{p}'s VMs wait for {x} to be back ({x} shuts down after {p})"),
                );
            }
        }
        let order: Vec<usize> = self.cfg.stop_order().into_iter().rev().collect();
        let mut gpos = group;
        while let Some(&gi) = order.get(gpos) {
            let ids: Vec<VmId> = e
                .vms
                .iter()
                .filter(|(_, t)| t.group == gi && t.stopped_by_us && t.was_on)
                .map(|(id, _)| id.clone())
                .collect();
            let gs = match group_since {
                Some(g) if gpos == group => g,
                _ => now,
            };
            let mut settled = true;
            // A VM whose host is not ready yet holds the group as long as
            // the host has its restore wait (then the host is lost and the
            // VM failed), whatever the group's own wait says.
            let mut host_pending = false;
            for id in &ids {
                let Some(t) = e.vms.get(id).cloned() else {
                    continue;
                };
                let loc = locate(table, &index, id);
                match t.st {
                    VmSt::Started | VmSt::StartFailed { .. } => continue,
                    _ => {}
                }
                let Some((host, info)) = loc else {
                    // A host not back yet may hold it (a halted host lists
                    // nothing): wait for that host, or for its restore
                    // wait to give it up.
                    if !not_ready.is_empty() {
                        settled = false;
                        host_pending = true;
                        continue;
                    }
                    self.set_vm(e, id, |t| {
                        t.st = VmSt::StartFailed {
                            error: "in no host's list".into(),
                        }
                    });
                    continue;
                };
                if e.hosts.get(host).is_some_and(|h| h.lost) {
                    self.set_vm(e, id, |t| {
                        t.st = VmSt::StartFailed {
                            error: format!("{host} did not come back"),
                        }
                    });
                    continue;
                }
                if not_ready.contains(host) || held.contains(host) {
                    settled = false;
                    host_pending = true;
                    continue;
                }
                // Found running (our start landed, or HA, autostart or a
                // person started it) in a table newer than our last stop:
                // restored. A guest caught mid-shutdown by an abort, or one
                // being power-cycled, is still going down: handled below.
                let seen_on_since = match t.st {
                    VmSt::StartSent | VmSt::StartPending | VmSt::StartAccepted { .. } => true,
                    VmSt::Off => t.off_at.is_some_and(|o| o < table.taken_at),
                    _ => false,
                };
                if info.power == PowerState::PoweredOn && seen_on_since && !Self::vm_busy(e, id) {
                    self.set_vm(e, id, |t| t.st = VmSt::Started);
                    continue;
                }
                // An abort caught this guest mid-shutdown: it cannot be
                // called back, so wait for it to finish, then start it. A
                // power cycle whose power-off failed (and is to be tried
                // again) is still going down too: its being on is not a
                // restore.
                let going_down = match t.st {
                    VmSt::ShutdownSent { deadline } => Some(deadline),
                    VmSt::Pending if t.asked && t.force_off && t.off_at.is_none() => {
                        Some(t.retry_at.unwrap_or(now))
                    }
                    _ => None,
                };
                if let Some(deadline) = going_down {
                    if info.power.is_on() {
                        settled = false;
                        if now >= deadline && !Self::vm_busy(e, id) && self.in_flight_ok(e, host) {
                            // As on the way down: a guest that has not
                            // stopped by its timeout is powered off, then
                            // started like the others.
                            self.note(
                                now,
                                e.id,
                                format!(
                                    "{} did not finish its guest shutdown: power cycling it",
                                    t.name
                                ),
                            );
                            self.set_vm(e, id, |t| t.st = VmSt::PowerOffSent);
                            self.issue(
                                now,
                                e,
                                Command::Vm {
                                    host: host.clone(),
                                    vm: id.clone(),
                                    name: t.name.clone(),
                                    op: VmOp::PowerOff,
                                },
                                out,
                            );
                        }
                        continue;
                    }
                }
                settled = false;
                // A power-on the platform accepted, and a list from its host
                // well after that still shows the VM off: the platform's
                // task failed or was undone. It is sent again, a bounded
                // number of times; a silent host's list is no evidence.
                if let VmSt::StartAccepted { at } = t.st {
                    let evidence = knows_vms_now(table, host)
                        && table.taken_at >= at + self.start_confirm_wait();
                    if !evidence {
                        continue;
                    }
                    let attempts = t.attempts + 1;
                    if attempts > self.cfg.retries {
                        self.set_vm(e, id, |t| {
                            t.st = VmSt::StartFailed {
                                error: format!(
                                    "its power-on was accepted {attempts} time(s) but no list since showed it running"
                                ),
                            }
                        });
                        continue;
                    }
                    self.note(
                        now,
                        e.id,
                        format!(
                            "{}: power-on accepted {} s ago but {host} still lists it off: sending it again",
                            t.name,
                            (now - at).as_secs()
                        ),
                    );
                    self.set_vm(e, id, |t| {
                        t.st = VmSt::StartPending;
                        t.attempts = attempts;
                    });
                }
                if Self::vm_busy(e, id)
                    || t.st == VmSt::StartSent
                    || t.retry_at.is_some_and(|r| r > now)
                    || !self.in_flight_ok(e, host)
                {
                    continue;
                }
                self.set_vm(e, id, |t| {
                    if t.st != VmSt::StartPending {
                        t.attempts = 0;
                    }
                    t.start_first.get_or_insert(now);
                    t.st = VmSt::StartSent;
                });
                self.issue(
                    now,
                    e,
                    Command::Vm {
                        host: host.clone(),
                        vm: id.clone(),
                        name: t.name.clone(),
                        op: VmOp::PowerOn,
                    },
                    out,
                );
            }
            // A guest still inside its shutdown timeout holds the group.
            // So does a VM with a command in flight or in the middle of a
            // power cycle.
            let guest_pending = ids.iter().any(|id| {
                Self::vm_busy(e, id)
                    || e.vms.get(id).is_some_and(|t| {
                        t.st == VmSt::Pending && t.asked && t.force_off && t.off_at.is_none()
                    })
                    || matches!(
                        e.vms.get(id).map(|t| &t.st),
                        Some(VmSt::ShutdownSent { deadline }) if *deadline > now
                    )
                    || matches!(e.vms.get(id).map(|t| &t.st), Some(VmSt::PowerOffSent))
                    || matches!(
                        e.vms.get(id).map(|t| &t.st),
                        Some(VmSt::StartAccepted { .. })
                    )
            });
            if !settled && (now < gs + self.cfg.restore_vm_wait || guest_pending || host_pending) {
                e.phase = Phase::Restoring {
                    since,
                    outlets_on: true,
                    group: gpos,
                    group_since: Some(gs),
                    wait_from: Some(wait_from),
                };
                return false;
            }
            if !settled {
                self.note(
                    now,
                    e.id,
                    format!(
                        "group {} not all running after the restore wait; going on",
                        self.cfg.group_props(gi).0
                    ),
                );
            }
            gpos += 1;
        }
        e.phase = Phase::Restoring {
            since,
            outlets_on: true,
            group: gpos,
            group_since: None,
            wait_from: Some(wait_from),
        };
        // Wait for outstanding starts to report, and for hosts not back yet
        // (a host without VMs, such as a NAS, is still powered on and
        // waited for).
        e.in_flight.is_empty() && not_ready.is_empty()
    }
}
