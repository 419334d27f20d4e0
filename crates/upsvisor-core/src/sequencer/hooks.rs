//! Hooks: starting them at their points, waiting for them (up to their
//! deadlines), what a blocking failure holds, and the limits that end a
//! hold (the forced deadline, the battery budget).

#[allow(unused_imports)]
use super::*;
use config::{Hook, HookPoint};

/// What a held step needs the battery for, which decides when the battery
/// budget ends the hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Holds {
    /// VM stops (the trigger, a group): held until the runtime left no
    /// longer covers a guest shutdown and the hosts' own.
    Vms,
    /// A host's shutdown: held until the runtime left only covers it.
    Host,
}

impl Sequencer {
    /// Starts the hooks at `point` (outside an episode's gate: on battery,
    /// after restore).
    pub(super) fn start_hooks(
        &mut self,
        now: Instant,
        episode: u64,
        point: &HookPoint,
        out: &mut Vec<Issued>,
    ) {
        let hooks: Vec<Hook> = self.cfg.hooks_at(point).cloned().collect();
        for h in &hooks {
            self.start_hook(now, episode, h, out);
        }
    }

    /// Starts one hook; returns its id.
    fn start_hook(&mut self, now: Instant, episode: u64, h: &Hook, out: &mut Vec<Issued>) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.hook_runs.insert(
            id,
            HookRun {
                hook: h.name.clone(),
                episode,
                deadline: now + h.deadline,
            },
        );
        self.push(
            now,
            episode,
            Audit::HookStarted {
                id,
                hook: h.name.clone(),
                point: h.point.clone(),
                blocking: h.holds(),
                deadline_s: h.deadline.as_secs(),
            },
        );
        out.push(Issued {
            id,
            cmd: Command::Hook {
                hook: h.name.clone(),
                point: h.point.clone(),
                episode,
                deadline: h.deadline,
            },
        });
        id
    }

    /// The hooks at `point` of episode `e`: started if they were not, and
    /// whether the step may go on. A blocking hook holds it while it runs
    /// and after it failed, until the forced deadline or the battery
    /// budget (of kind `holds`) ends the hold, which is audited as
    /// [`Audit::ForcedPastHook`]. Non-blocking hooks never hold.
    pub(super) fn hook_gate(
        &mut self,
        now: Instant,
        e: &mut Episode,
        view: &PowerView,
        point: &HookPoint,
        holds: Holds,
        out: &mut Vec<Issued>,
    ) -> bool {
        if !self.cfg.hooks.iter().any(|h| &h.point == point) {
            return true;
        }
        self.start_unstarted(now, e, point, out);
        let holding: Vec<Hook> = self
            .cfg
            .hooks_at(point)
            .filter(|h| h.holds())
            .filter(|h| {
                matches!(
                    e.hooks.get(&h.name),
                    Some(HookSt::Running { .. } | HookSt::Failed { .. })
                )
            })
            .cloned()
            .collect();
        if holding.is_empty() {
            return true;
        }
        if let Some(why) = self.hold_over(now, e, view, holds) {
            for h in holding {
                let state = match e.hooks.get(&h.name) {
                    Some(HookSt::Running { .. }) => "still running",
                    _ => "failed",
                };
                e.hooks.insert(h.name.clone(), HookSt::Overridden);
                self.push(
                    now,
                    e.id,
                    Audit::ForcedPastHook {
                        hook: h.name.clone(),
                        reason: format!(
                            "{why}: {point} goes on although its blocking hook {} {state}",
                            h.name
                        ),
                    },
                );
            }
            return true;
        }
        for h in holding {
            if let Some(HookSt::Failed { error, held_said }) = e.hooks.get_mut(&h.name) {
                if !*held_said {
                    *held_said = true;
                    let text = format!(
                        "blocking hook {} failed ({error}): {point} is held until the forced deadline or the battery budget",
                        h.name
                    );
                    self.note(now, e.id, text);
                }
            }
        }
        false
    }

    /// Starts the hooks at `point` of episode `e` that have not started in
    /// this episode (each runs at most once per episode), and returns them.
    fn start_unstarted(
        &mut self,
        now: Instant,
        e: &mut Episode,
        point: &HookPoint,
        out: &mut Vec<Issued>,
    ) -> Vec<Hook> {
        let unstarted: Vec<Hook> = self
            .cfg
            .hooks_at(point)
            .filter(|h| !e.hooks.contains_key(&h.name))
            .cloned()
            .collect();
        for h in &unstarted {
            let id = self.start_hook(now, e.id, h, out);
            let deadline = now + h.deadline;
            e.hooks
                .insert(h.name.clone(), HookSt::Running { id, deadline });
        }
        unstarted
    }

    /// Starts the hooks at `point` of episode `e` that were not, and waits
    /// for none of them (said when one is blocking).
    pub(super) fn start_unwaited(
        &mut self,
        now: Instant,
        e: &mut Episode,
        point: &HookPoint,
        out: &mut Vec<Issued>,
    ) {
        for h in self.start_unstarted(now, e, point, out) {
            if h.holds() {
                self.note(
                    now,
                    e.id,
                    format!(
                        "blocking hook {} is not waited for: {point} comes after the power-device command, whose cut comes regardless",
                        h.name
                    ),
                );
            }
        }
    }

    /// Why a hold must end now, if it must: the UPS reports LB or FSD
    /// that it did not when the episode began, the forced deadline passed, or the runtime left only covers what
    /// follows the held step.
    fn hold_over(
        &self,
        now: Instant,
        e: &Episode,
        view: &PowerView,
        holds: Holds,
    ) -> Option<String> {
        if view.low_battery && !e.lb_at_start {
            return Some("the UPS reports LB (low battery)".to_owned());
        }
        let battery = match holds {
            Holds::Vms => self.vm_hold_budget_gone(view),
            Holds::Host => self.host_budget_gone(view),
        };
        if let Some(rt) = battery {
            return Some(format!(
                "the battery's {rt} s left only cover {}",
                match holds {
                    Holds::Vms => "the VMs' and hosts' shutdown",
                    Holds::Host => "the host's own shutdown",
                }
            ));
        }
        let due = self.cfg.force_host_after.map(|f| e.started + f);
        due.is_some_and(|d| now >= d)
            .then(|| "forced deadline reached".to_owned())
    }

    /// A held VM stage ends once the runtime left no longer covers what
    /// still follows it, counted in full: every group's guest timeout (a
    /// power-off group counts one call deadline), the hosts' and the
    /// management hosts' halts, and the margin. Counting every group, not
    /// only those after the held one, ends the hold early rather than
    /// late: a plan that fitted the battery at the trigger still fits
    /// after the hold (seed 4083475797: held until the guests' budget
    /// alone was gone, a system VM its manager kept restarting was still
    /// on when the battery ran flat).
    fn vm_hold_budget_gone(&self, view: &PowerView) -> Option<u32> {
        let rt = view.runtime_s?;
        let groups: Duration = self
            .cfg
            .stop_order()
            .into_iter()
            .map(|gi| match self.cfg.group_props(gi).1 {
                VmAction::Shutdown { timeout } => timeout,
                VmAction::PowerOff => self.cfg.call_deadline,
                VmAction::LeaveRunning => Duration::ZERO,
            })
            .sum();
        let need = groups + self.cfg.host_down_wait * 2 + BUDGET_MARGIN;
        (Duration::from_secs(u64::from(rt)) <= need).then_some(rt)
    }

    /// Hooks whose deadline passed without a result: failed (unknown is
    /// never success), audited.
    pub(super) fn expire_hooks(&mut self, now: Instant) {
        let due: Vec<u64> = self
            .hook_runs
            .iter()
            .filter(|(_, r)| now >= r.deadline)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.finish_hook(
                now,
                id,
                Err("no result within its deadline: counted as failed".to_owned()),
            );
        }
    }

    /// A hook's result (`Err` with the reason for a failure). Returns false
    /// when `id` is no hook in flight.
    pub(super) fn finish_hook(
        &mut self,
        now: Instant,
        id: u64,
        result: std::result::Result<(), String>,
    ) -> bool {
        let Some(run) = self.hook_runs.remove(&id) else {
            return false;
        };
        self.push(
            now,
            run.episode,
            Audit::HookFinished {
                id,
                hook: run.hook.clone(),
                error: result.as_ref().err().cloned(),
            },
        );
        if let Some(e) = self.episode.as_mut().filter(|e| e.id == run.episode) {
            if let Some(st) = e.hooks.get_mut(&run.hook) {
                if matches!(st, HookSt::Running { id: i, .. } if *i == id) {
                    *st = match result {
                        Ok(()) => HookSt::Succeeded,
                        Err(error) => HookSt::Failed {
                            error,
                            held_said: false,
                        },
                    };
                }
            }
        }
        true
    }

    /// The earliest deadline of a hook in flight.
    pub(super) fn hook_wakeup(&self) -> Option<Instant> {
        self.hook_runs.values().map(|r| r.deadline).min()
    }

    /// On battery: the on-battery hooks, once per outage (armed only).
    pub(super) fn on_battery_hooks(
        &mut self,
        now: Instant,
        view: &PowerView,
        out: &mut Vec<Issued>,
    ) {
        if !view.on_battery {
            if self.battery_hooked {
                self.battery_hooked = false;
                self.dirty = true;
            }
            return;
        }
        if self.battery_hooked {
            return;
        }
        self.battery_hooked = true;
        self.dirty = true;
        let episode = self.episode.as_ref().map_or(0, |e| e.id);
        self.start_hooks(now, episode, &HookPoint::OnBattery, out);
    }

    /// After a restart: hooks that were in flight have no result and never
    /// will; they failed (outcome unknown).
    pub(super) fn resume_hooks(&mut self, now: Instant) {
        let ids: Vec<u64> = self.hook_runs.keys().copied().collect();
        for id in ids {
            self.finish_hook(
                now,
                id,
                Err(
                    "controller restarted while it ran: outcome unknown, counted as failed"
                        .to_owned(),
                ),
            );
        }
    }
}
