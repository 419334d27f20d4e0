//! Stopping, VM side: starting an episode, the VM groups' stages, and
//! issuing commands within the in-flight limits.

#[allow(unused_imports)]
use super::*;

impl Sequencer {
    pub(super) fn maybe_start(&mut self, now: Instant, table: &VmTable, view: &PowerView) {
        let shed_groups = self.cfg.groups.iter().any(|g| g.shed_on_battery);
        match &mut self.episode {
            Some(e) if !view.at_risk.is_empty() && matches!(e.phase, Phase::Stopping { .. }) => {
                let new: Vec<HostId> = view.at_risk.difference(&e.scope).cloned().collect();
                // A live test of a host meets a real outage: from now on it
                // is the outage's episode, with its devices' final action,
                // and restore waits for mains.
                let was_test = e.test_host.take().is_some();
                if was_test {
                    e.devices.extend(view.unhealthy.iter().cloned());
                }
                if !e.full || !new.is_empty() || was_test {
                    let was_full = e.full && !was_test;
                    e.full = true;
                    e.scope.extend(new.iter().cloned());
                    for h in &new {
                        e.hosts.entry(h.clone()).or_insert_with(new_host);
                    }
                    // Re-walk the stages: finished ones finish at once.
                    e.phase = Phase::Stopping { stage: 0 };
                    let id = e.id;
                    let text = if was_test {
                        format!(
                            "a real outage during the host test: this is now the outage's episode ({})",
                            view.reason
                        )
                    } else if was_full {
                        format!("scope grows: {new:?}")
                    } else {
                        format!("load shedding becomes a full shutdown: {}", view.reason)
                    };
                    self.note(now, id, text);
                }
            }
            Some(_) => {}
            None => {
                if self.held.is_some() {
                    // Held after an operator's abort until this outage is
                    // over: power no longer at risk and mains back.
                    if view.at_risk.is_empty() && !view.on_battery {
                        self.held = None;
                        self.dirty = true;
                    } else {
                        return;
                    }
                }
                let full = !view.at_risk.is_empty();
                let shed = shed_groups && view.on_battery && !view.mains_stable;
                if !full && !shed {
                    return;
                }
                self.episodes += 1;
                let scope: BTreeSet<HostId> = if full {
                    view.at_risk.clone()
                } else {
                    table.hosts.keys().cloned().collect()
                };
                let mut e = Episode {
                    id: self.episodes,
                    started: now,
                    reason: view.reason.clone(),
                    full,
                    phase: Phase::Stopping { stage: 0 },
                    scope: scope.clone(),
                    vms: BTreeMap::new(),
                    hosts: scope.iter().map(|h| (h.clone(), new_host())).collect(),
                    in_flight: BTreeMap::new(),
                    committed: false,
                    finals: Vec::new(),
                    devices: view.unhealthy.clone(),
                    held_noted: false,
                    detached: BTreeSet::new(),
                    outlets_left_off: Vec::new(),
                    hooks: BTreeMap::new(),
                    test: None,
                    test_host: None,
                    lb_at_start: view.low_battery,
                };
                self.track_new_vms(&mut e, table);
                let reason = view.reason.clone();
                self.push(
                    now,
                    e.id,
                    Audit::EpisodeStarted {
                        reason,
                        scope: scope.into_iter().collect(),
                        full,
                    },
                );
                let first = self.phase_name(&e);
                self.push(now, e.id, Audit::Phase { phase: first });
                self.poll_wanted = true;
                self.episode = Some(e);
            }
        }
    }

    /// Why a live test may not start now, if it may not: disarmed, an
    /// episode in progress or held, or power not on line and stable.
    fn test_allowed(&self, view: &PowerView) -> Result<(), crate::Error> {
        use crate::Error;
        if !self.cfg.armed {
            return Err(Error::invalid_state(
                "a live test sends real power commands: this controller is disarmed (arm it first)",
            ));
        }
        if let Some(e) = &self.episode {
            return Err(Error::invalid_state(format!(
                "episode {} is in progress ({})",
                e.id, e.reason
            )));
        }
        if let Some(r) = &self.held {
            return Err(Error::invalid_state(format!(
                "new episodes are held after an abort ({r}) until power is no longer at risk"
            )));
        }
        if !view.at_risk.is_empty() || view.on_battery || !view.mains_stable {
            return Err(Error::invalid_state(format!(
                "not while power is at risk or on battery ({}): a test needs mains on line and stable",
                view.reason
            )));
        }
        Ok(())
    }

    /// Starts an operator's live test of one host: an episode scoped to
    /// `host` alone, as if only its feed had failed. Its VMs stop as in an
    /// outage (every group in order, hooks, timeouts, a power-off after a
    /// guest that does not stop), then the host shuts down; no power
    /// device is commanded and no other host or VM is touched. Since mains
    /// is on line, restore follows at once: the host is powered on out of
    /// band, and once it answers its VMs are started again. This proves
    /// the host's shutdown, its power-on method and its VMs' return before
    /// an outage needs them. A real outage meanwhile makes it a real
    /// episode (the scope grows, and restore then waits for mains).
    /// Audited like any episode (reason `operator's test of host <host>`).
    /// Returns the episode's id.
    ///
    /// # Errors
    /// As [`Sequencer::start_test`]; `Config` for a host that is not in
    /// the inventory, that has no out-of-band power-on (nothing would
    /// bring it back), or when host shutdown is off (`shutdown_hosts`);
    /// `InvalidState` for the host running this controller's own VM (the
    /// test would stop the controller), or a host that did not answer the
    /// latest poll (its VMs are not known).
    pub fn start_host_test(
        &mut self,
        now: Instant,
        table: &VmTable,
        view: &PowerView,
        host: &HostId,
    ) -> Result<u64, crate::Error> {
        use crate::Error;
        self.test_allowed(view)?;
        let Some(entry) = self.inventory.hosts.iter().find(|h| &h.id == host) else {
            return Err(Error::config(
                "host",
                format!(
                    "no host `{host}` (configured: {})",
                    self.inventory
                        .hosts
                        .iter()
                        .map(|h| h.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        };
        if !entry.power_on {
            return Err(Error::config(
                "host",
                format!(
                    "{host} has no out-of-band power-on method: once shut down, nothing would bring it back"
                ),
            ));
        }
        if !self.cfg.shutdown_hosts {
            return Err(Error::config(
                "shutdown_hosts",
                "host shutdown is off: a host test would only stop its VMs (test a group instead)",
            ));
        }
        if self
            .cfg
            .controller_in(table)
            .is_some_and(|(h, _)| h == host)
        {
            return Err(Error::invalid_state(format!(
                "{host} runs this controller's own VM: the test would stop the controller"
            )));
        }
        if !table.host(host).is_some_and(|r| r.is_fresh()) {
            return Err(Error::invalid_state(format!(
                "{host} did not answer the latest poll: its VMs are not known"
            )));
        }
        let scope = BTreeSet::from([host.clone()]);
        let reason = format!("operator's test of host {host}");
        Ok(self.open_test(now, table, reason, true, scope, None, Some(host.clone())))
    }

    /// Starts an operator's live test of VM group `group` (`default` is the
    /// group of VMs no other group matches): an episode that stops that
    /// group's VMs as an outage would (hooks, timeouts, power-off after a
    /// guest that does not stop), touches no other VM, no host and no power
    /// device, and restores the group once its stage is done, since mains
    /// is on line. A real outage meanwhile makes it a full shutdown, as it
    /// does a load-shedding episode. Audited like any episode (reason
    /// `operator's test of group <group>`). Returns the episode's id.
    ///
    /// # Errors
    /// `InvalidState` when disarmed, when an episode is in progress or held
    /// after an abort, or while power is at risk or on battery; `Config`
    /// for a group that is not configured.
    pub fn start_test(
        &mut self,
        now: Instant,
        table: &VmTable,
        view: &PowerView,
        group: &str,
    ) -> Result<u64, crate::Error> {
        use crate::Error;
        self.test_allowed(view)?;
        let known = group == "default" || self.cfg.groups.iter().any(|g| g.name == group);
        if !known {
            return Err(Error::config(
                "group",
                format!(
                    "no group `{group}` (configured: {})",
                    self.cfg
                        .groups
                        .iter()
                        .map(|g| g.name.as_str())
                        .chain(["default"])
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        let scope = table.hosts.keys().cloned().collect();
        let reason = format!("operator's test of group {group}");
        Ok(self.open_test(
            now,
            table,
            reason,
            false,
            scope,
            Some(group.to_owned()),
            None,
        ))
    }

    /// Opens an operator's test episode over `scope` (no device: a test
    /// commands none), audited and journaled; returns its id.
    #[allow(clippy::too_many_arguments)]
    fn open_test(
        &mut self,
        now: Instant,
        table: &VmTable,
        reason: String,
        full: bool,
        scope: BTreeSet<HostId>,
        test: Option<String>,
        test_host: Option<HostId>,
    ) -> u64 {
        self.episodes += 1;
        let mut e = Episode {
            id: self.episodes,
            started: now,
            reason: reason.clone(),
            full,
            phase: Phase::Stopping { stage: 0 },
            scope: scope.clone(),
            vms: BTreeMap::new(),
            hosts: scope.iter().map(|h| (h.clone(), new_host())).collect(),
            in_flight: BTreeMap::new(),
            committed: false,
            finals: Vec::new(),
            devices: BTreeSet::new(),
            held_noted: false,
            detached: BTreeSet::new(),
            outlets_left_off: Vec::new(),
            hooks: BTreeMap::new(),
            test,
            test_host,
            lb_at_start: false,
        };
        self.track_new_vms(&mut e, table);
        let id = e.id;
        self.push(
            now,
            id,
            Audit::EpisodeStarted {
                reason,
                scope: scope.into_iter().collect(),
                full,
            },
        );
        let first = self.phase_name(&e);
        self.push(now, id, Audit::Phase { phase: first });
        self.poll_wanted = true;
        self.dirty = true;
        self.episode = Some(e);
        id
    }

    /// Tracks VMs in scope not seen before; true if any was added.
    pub(super) fn track_new_vms(&self, e: &mut Episode, table: &VmTable) -> bool {
        let mut added = false;
        let own = self.cfg.controller_in(table).map(|(_, v)| v.id.clone());
        for (h, v) in table.vms() {
            if !e.scope.contains(h) || e.vms.contains_key(&v.id) {
                continue;
            }
            added = true;
            let group = self.cfg.group_of(v);
            let restoring = matches!(e.phase, Phase::Restoring { .. });
            e.vms.insert(
                v.id.clone(),
                VmTrack {
                    name: v.name.clone(),
                    group,
                    was_on: v.power.is_on(),
                    // A VM first seen during restore is not ours to touch;
                    // this controller's own VM goes with its host, last.
                    st: if restoring || own.as_ref() == Some(&v.id) {
                        VmSt::Left
                    } else {
                        VmSt::Pending
                    },
                    attempts: 0,
                    retry_at: None,
                    force_off: false,
                    stopped_by_us: false,
                    sent_at: None,
                    off_at: None,
                    unseen: false,
                    failed_at: None,
                    revivals: 0,
                    asked: false,
                    start_first: None,
                    regroup: false,
                    missing_since: None,
                },
            );
        }
        added
    }

    /// A VM that arrived on a host after its shutdown was decided (a live
    /// migration switching over in between) goes down with the host: said
    /// at once, as a forced decision naming it. Maintenance mode keeps
    /// migrations out; the confirming table is at most
    /// [`CONFIRM_MAX_AGE`] old, which keeps the window small.
    pub(super) fn log_late_arrivals(&mut self, now: Instant, e: &mut Episode, table: &VmTable) {
        let mut late = Vec::new();
        for (h, t) in e.hosts.iter_mut() {
            let HostSt::ShutdownSent { at } = t.st else {
                continue;
            };
            if t.forced {
                continue;
            }
            let on: Vec<String> = table
                .host(h)
                .filter(|r| r.is_fresh() && r.last_seen.is_some_and(|s| s > at))
                .map(|r| r.vms_on().map(|v| v.name.clone()).collect())
                .unwrap_or_default();
            if !on.is_empty() {
                t.forced = true;
                late.push((h.clone(), on));
            }
        }
        for (host, on) in late {
            self.push(
                now,
                e.id,
                Audit::ForcedHostShutdown {
                    host,
                    reason: format!(
                        "VM(s) arrived after its shutdown was sent: {}; use maintenance mode to keep migrations out",
                        on.join(", ")
                    ),
                },
            );
        }
    }

    pub(super) fn in_flight_ok(&self, e: &Episode, host: &HostId) -> bool {
        e.in_flight.len() < self.cfg.max_in_flight
            && e.in_flight
                .values()
                .filter(|c| c.host() == Some(host))
                .count()
                < self.cfg.per_host_in_flight
    }

    pub(super) fn issue(
        &mut self,
        now: Instant,
        e: &mut Episode,
        cmd: Command,
        out: &mut Vec<Issued>,
    ) {
        let id = self.next_id;
        self.next_id += 1;
        e.in_flight.insert(id, cmd.clone());
        self.push(
            now,
            e.id,
            Audit::Issued {
                id,
                cmd: cmd.clone(),
            },
        );
        out.push(Issued { id, cmd });
    }

    pub(super) fn vm_busy(e: &Episode, vm: &VmId) -> bool {
        e.in_flight
            .values()
            .any(|c| matches!(c, Command::Vm { vm: v, .. } if v == vm))
    }

    /// One VM group's stop stage; true when every VM in it is settled.
    pub(super) fn step_group(
        &mut self,
        now: Instant,
        e: &mut Episode,
        table: &VmTable,
        view: &PowerView,
        gi: usize,
        out: &mut Vec<Issued>,
    ) -> bool {
        let (name, action, _, shed) = self.cfg.group_props(gi);
        let stops = match &e.test {
            _ if e.full => true,
            Some(g) => g == name,
            None => shed,
        };
        if !stops {
            return true;
        }
        let point = HookPoint::BeforeGroup {
            group: name.to_owned(),
        };
        if !self.hook_gate(now, e, view, &point, Holds::Vms, out) {
            return false;
        }
        let ids: Vec<VmId> = e
            .vms
            .iter()
            .filter(|(_, t)| t.group == gi)
            .map(|(id, _)| id.clone())
            .collect();
        let index = table.index();
        let mut settled = true;
        for id in ids {
            let loc = locate(table, &index, &id);
            let Some(t) = e.vms.get(&id).cloned() else {
                continue;
            };
            let Some((host, info)) = loc else {
                if !matches!(
                    t.st,
                    VmSt::Pending | VmSt::ShutdownSent { .. } | VmSt::PowerOffSent
                ) {
                    continue;
                }
                // Silence never deletes: while a host in scope is silent the
                // VM may be there. It holds nothing (nothing can be sent to
                // it), and it is walked again when a list shows it; the
                // silent host itself is never shut down on silence.
                if e.scope.iter().any(|h| !knows_vms_now(table, h)) {
                    if !t.unseen {
                        self.set_vm(e, &id, |t| t.unseen = true);
                        self.note(
                            now,
                            e.id,
                            format!(
                                "{} is in no answering host's list; a host in scope is silent, so it is kept until one shows it",
                                t.name
                            ),
                        );
                    }
                    continue;
                }
                // Every host answered and none lists it. A live migration
                // can make a VM miss one table (gone from the source, not
                // yet on the target): it is left alone only when a table a
                // poll period later still has it nowhere.
                match t.missing_since {
                    None => {
                        let at = table.taken_at;
                        self.set_vm(e, &id, |t| t.missing_since = Some(at));
                        self.poll_wanted = true;
                        settled = false;
                        continue;
                    }
                    Some(m) if table.taken_at < m + self.cfg.observe_lag => {
                        settled = false;
                        continue;
                    }
                    Some(_) => {}
                }
                self.set_vm(e, &id, |t| t.st = VmSt::Left);
                self.note(
                    now,
                    e.id,
                    format!("{} is in no host's list any more; left alone", t.name),
                );
                continue;
            };
            // A troubled host's VMs are stepped but do not hold the stage.
            let holds = !e.hosts.get(host).is_some_and(|h| h.troubled);
            let fresh_off = !info.power.is_on();
            match &t.st {
                VmSt::Off | VmSt::Left | VmSt::Failed { .. } => {
                    // A VM we powered off that a newer table still shows on
                    // (e.g. the command was lost in a restart) goes again.
                    if t.st == VmSt::Off
                        && info.power == PowerState::PoweredOn
                        && knows_vms_now(table, host)
                        && t.off_at.is_some_and(|o| o < table.taken_at)
                    {
                        self.set_vm(e, &id, |t| {
                            t.st = VmSt::Pending;
                            t.force_off = true;
                        });
                        settled &= !holds;
                    }
                    continue;
                }
                _ => {}
            }
            if Self::vm_busy(e, &id) {
                settled &= !holds;
                continue;
            }
            // Off in the table: for a VM not yet touched even a stale row
            // says it was off; after a command only fresh data counts.
            if fresh_off
                && (t.st == VmSt::Pending || table.host(host).is_some_and(|r| r.is_fresh()))
            {
                let measured = match t.st {
                    VmSt::ShutdownSent { .. } => t.sent_at.map(|s| now - s),
                    _ => None,
                };
                if let Some(d) = measured {
                    self.measured.insert(id.clone(), d.as_millis() as u64);
                }
                self.dirty = true;
                self.set_vm(e, &id, |t| {
                    if t.st != VmSt::Pending {
                        t.stopped_by_us = true;
                    }
                    t.st = VmSt::Off;
                    t.off_at = Some(now);
                });
                continue;
            }
            settled &= !holds;
            if t.retry_at.is_some_and(|r| r > now) || !self.in_flight_ok(e, host) {
                continue;
            }
            let op = match (&t.st, action) {
                (VmSt::Pending, VmAction::LeaveRunning) => {
                    self.set_vm(e, &id, |t| t.st = VmSt::Left);
                    continue;
                }
                (VmSt::Pending, VmAction::PowerOff) => VmOp::PowerOff,
                // Tools known absent: power off at once. Unknown tools state
                // (libvirt, Proxmox, Hyper-V without integration services
                // data) gets a graceful attempt: ACPI or the platform's soft
                // shutdown may work without an agent, and a refusal
                // (ToolsUnavailable, Unsupported) falls back to power off.
                (VmSt::Pending, VmAction::Shutdown { .. })
                    if t.force_off
                        || matches!(
                            info.tools,
                            ToolsState::NotInstalled | ToolsState::NotRunning
                        )
                        || !self.can_vm(host, VmOp::ShutdownGuest) =>
                {
                    if !t.force_off {
                        let why = if self.can_vm(host, VmOp::ShutdownGuest) {
                            format!("has no running guest tools ({:?})", info.tools)
                        } else {
                            format!("is on {host}, whose transport cannot shut guests down")
                        };
                        self.note(now, e.id, format!("{} {why}: powering off at once", t.name));
                    }
                    VmOp::PowerOff
                }
                (VmSt::Pending, VmAction::Shutdown { timeout }) => {
                    let deadline = t.sent_at.unwrap_or(now) + timeout;
                    self.set_vm(e, &id, |t| {
                        t.st = VmSt::ShutdownSent { deadline };
                        t.sent_at.get_or_insert(now);
                    });
                    VmOp::ShutdownGuest
                }
                (VmSt::ShutdownSent { .. }, _) if self.guest_budget_gone(view).is_some() => {
                    let rt = self.guest_budget_gone(view).unwrap_or(0);
                    self.note(
                        now,
                        e.id,
                        format!(
                            "{}: the battery's {rt} s left no longer cover its guest shutdown and the host's: powering off",
                            t.name
                        ),
                    );
                    VmOp::PowerOff
                }
                (VmSt::ShutdownSent { deadline }, _) if now >= *deadline => {
                    self.note(
                        now,
                        e.id,
                        format!("{} did not stop within its timeout: powering off", t.name),
                    );
                    VmOp::PowerOff
                }
                _ => continue,
            };
            self.set_vm(e, &id, |t| {
                // Whatever happens next, this VM is ours to restore: it was
                // running when we chose to stop it.
                t.stopped_by_us = true;
                t.was_on = true;
                if op == VmOp::PowerOff {
                    t.st = VmSt::PowerOffSent;
                }
            });
            if self.cfg.commit_point == CommitPoint::FirstVmCommand && e.full {
                e.committed = true;
            }
            self.issue(
                now,
                e,
                Command::Vm {
                    host: host.clone(),
                    vm: id.clone(),
                    name: t.name.clone(),
                    op,
                },
                out,
            );
        }
        settled
    }

    pub(super) fn set_vm(&self, e: &mut Episode, id: &VmId, f: impl FnOnce(&mut VmTrack)) {
        if let Some(t) = e.vms.get_mut(id) {
            f(t);
        }
    }

    /// The runtime left, when it no longer covers a guest shutdown plus
    /// the host's own (`host_down_wait`) with a margin: guests still
    /// shutting down are powered off.
    pub(super) fn guest_budget_gone(&self, view: &PowerView) -> Option<u32> {
        let rt = view.runtime_s?;
        (Duration::from_secs(u64::from(rt)) <= self.cfg.host_down_wait + BUDGET_MARGIN)
            .then_some(rt)
    }

    pub(super) fn stages(&self) -> Vec<Stage> {
        let order = self.cfg.stop_order();
        let mut s: Vec<Stage> = Vec::new();
        let mut hosts_added = false;
        for gi in order {
            let mgmt = self.cfg.group_props(gi).2;
            if mgmt && !hosts_added {
                s.push(Stage::Hosts { management: false });
                hosts_added = true;
            }
            s.push(Stage::Group { index: gi });
        }
        if !hosts_added {
            s.push(Stage::Hosts { management: false });
        }
        s.push(Stage::Hosts { management: true });
        s.push(Stage::Final);
        s.push(Stage::OwnHost);
        s
    }

    pub(super) fn stage_name(&self, s: Option<Stage>) -> String {
        match s {
            Some(Stage::Group { index }) => format!("group {}", self.cfg.group_props(index).0),
            Some(Stage::Hosts { management: false }) => "hosts".into(),
            Some(Stage::Hosts { management: true }) => "management hosts".into(),
            Some(Stage::Final) => "power devices".into(),
            Some(Stage::OwnHost) => "this controller's own host, last".into(),
            None => "-".into(),
        }
    }

    pub(super) fn phase_name(&self, e: &Episode) -> String {
        match &e.phase {
            Phase::Stopping { stage } => match self.stages().get(*stage).copied() {
                None => "stopping: done".into(),
                Some(Stage::Group { .. }) => format!(
                    "stopping: {}",
                    self.stage_name(self.stages().get(*stage).copied())
                ),
                Some(_) if !e.full => {
                    "load shed; holding until mains is stable or a trigger fires".into()
                }
                s => format!("stopping: {}", self.stage_name(s)),
            },
            Phase::Down => "down: waiting for stable mains".into(),
            Phase::Restoring { .. } => "restoring".into(),
        }
    }
}
