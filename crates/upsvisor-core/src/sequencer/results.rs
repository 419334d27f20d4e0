//! Command results: what each answer does to the VM, host or device it
//! was for; whether and when a failed command is tried again is the one
//! policy in `retry.rs`.

use super::retry::Retry;
#[allow(unused_imports)]
use super::*;

impl Sequencer {
    /// Reports a command's result.
    pub fn complete(&mut self, now: Instant, id: u64, result: Result<(), Error>) {
        if self.finish_hook(
            now,
            id,
            result.as_ref().map_err(ToString::to_string).copied(),
        ) {
            return;
        }
        let Some(mut e) = self.episode.take() else {
            return;
        };
        let Some(cmd) = e.in_flight.remove(&id) else {
            self.episode = Some(e);
            return;
        };
        let mut notes: Vec<String> = Vec::new();
        self.push(
            now,
            e.id,
            Audit::Completed {
                id,
                cmd: cmd.clone(),
                error: result.as_ref().err().map(ToString::to_string),
            },
        );
        // One hung call marks its host troubled for the rest of the episode
        // (see `HostTrack::troubled`).
        if let (Some(h), Err(err)) = (cmd.host(), &result) {
            if err.kind() == ErrorKind::Timeout {
                let h = h.clone();
                if let Some(t) = e.hosts.get_mut(&h).filter(|t| !t.troubled) {
                    t.troubled = true;
                    notes.push(format!(
                        "{h}: a command hung for its whole call deadline; its VMs and its shutdown go on at its own pace without holding other hosts"
                    ));
                }
            }
        }
        let retry = Retry::of(&self.cfg);
        match (&cmd, result) {
            (Command::Vm { vm, op, .. }, r) => {
                let Some(t) = e.vms.get_mut(vm) else {
                    self.episode = Some(e);
                    return;
                };
                match (op, r) {
                    (VmOp::ShutdownGuest, Ok(())) => t.asked = true,
                    (VmOp::PowerOff, Ok(())) => {
                        t.st = VmSt::Off;
                        t.stopped_by_us = true;
                        t.off_at = Some(now);
                    }
                    (VmOp::PowerOn, Ok(())) => {
                        // Accepted is not running: restore counts it once
                        // a list shows it on.
                        t.st = VmSt::StartAccepted { at: now };
                        self.poll_wanted = true;
                    }
                    (VmOp::PowerOn, Err(err)) => {
                        t.attempts += 1;
                        let moved =
                            matches!(err.kind(), ErrorKind::NotFound | ErrorKind::InvalidState);
                        if moved && retry.may_look_again(t.attempts) {
                            // Moved since the table was taken (DRS, HA), or
                            // already starting: look again, as on the way
                            // down. A VM found running counts as restored.
                            t.st = VmSt::StartPending;
                            t.retry_at = Some(retry.next(now));
                            self.poll_wanted = true;
                        } else if err.is_transient()
                            && retry.may_retry_start(t.attempts, t.start_first, now)
                        {
                            // A host failing now and then (a connection
                            // reset, a busy agent) gets tries until the
                            // restore wait, with a backoff that doubles up
                            // to 30 s, not a fixed count within seconds.
                            t.st = VmSt::StartPending;
                            t.retry_at = Some(retry.next_doubled(t.attempts, now));
                        } else {
                            t.st = VmSt::StartFailed {
                                error: err.to_string(),
                            };
                        }
                    }
                    (_, Err(err)) => match err.kind() {
                        ErrorKind::ToolsUnavailable | ErrorKind::Unsupported
                            if *op == VmOp::ShutdownGuest =>
                        {
                            t.force_off = true;
                            t.st = VmSt::Pending;
                        }
                        ErrorKind::NotFound | ErrorKind::InvalidState => {
                            // Moved, or already changing state: look again.
                            t.attempts += 1;
                            self.poll_wanted = true;
                            t.st = if retry.may_look_again(t.attempts) {
                                VmSt::Pending
                            } else {
                                VmSt::Failed {
                                    error: err.to_string(),
                                }
                            };
                            if *op == VmOp::PowerOff {
                                t.force_off = true;
                            }
                        }
                        // A call that ran out its deadline hung on its host
                        // (polls may still be answered: a stuck task queue).
                        // The same call again would cost another deadline,
                        // and one hung host must cost only its own: a guest
                        // shutdown is not sent again (it may have been
                        // delivered) and the guest gets the rest of its
                        // timeout before a power-off; a power-off that hung
                        // fails, and is taken up again only if the host
                        // goes silent and answers again.
                        ErrorKind::Timeout if *op == VmOp::ShutdownGuest => {
                            if !matches!(t.st, VmSt::ShutdownSent { .. }) {
                                t.force_off = true;
                                t.st = VmSt::Pending;
                            }
                        }
                        ErrorKind::Timeout if *op == VmOp::PowerOff => {
                            t.force_off = true;
                            t.st = VmSt::Failed {
                                error: err.to_string(),
                            };
                        }
                        _ if err.is_transient() && retry.may_retry(t.attempts + 1) => {
                            t.attempts += 1;
                            t.st = VmSt::Pending;
                            t.retry_at = Some(retry.next(now));
                            if *op == VmOp::PowerOff {
                                t.force_off = true;
                            }
                        }
                        _ if *op == VmOp::ShutdownGuest && err.kind() != ErrorKind::Auth => {
                            t.force_off = true;
                            t.st = VmSt::Pending;
                        }
                        _ => {
                            t.st = VmSt::Failed {
                                error: err.to_string(),
                            }
                        }
                    },
                    (_, Ok(())) => {}
                }
                if matches!(t.st, VmSt::Failed { .. }) {
                    t.failed_at = Some(now);
                }
            }
            (Command::Host { host, op }, r) => {
                if let Some(t) = e.hosts.get_mut(host) {
                    match (op, r) {
                        (HostOp::EnterMaintenance, Ok(())) => {
                            t.st = HostSt::InMaint;
                            t.maint = true;
                        }
                        (HostOp::EnterMaintenance, Err(err)) => {
                            t.attempts += 1;
                            t.st = HostSt::Up;
                            t.retry_at = Some(retry.next(now));
                            if !retry.may_retry(t.attempts)
                                || !(err.is_transient() || err.kind() == ErrorKind::InvalidState)
                            {
                                t.no_maint = true;
                            }
                        }
                        (HostOp::Shutdown, Ok(())) => {}
                        (HostOp::Shutdown, Err(err))
                            if err.kind() == ErrorKind::InvalidState
                                && !t.maint
                                && !t.needs_maint
                                && !t.no_maint =>
                        {
                            // Refused outside maintenance mode (ESXi's rule
                            // for `esxcli system shutdown poweroff`): the
                            // remedy is to enter it, then shut down again.
                            t.needs_maint = true;
                            t.st = HostSt::Up;
                            t.empty_since = None;
                            notes.push(format!(
                                "{host} refused the shutdown ({err}): entering maintenance mode, then shutting down again"
                            ));
                        }
                        (HostOp::Shutdown, Err(_)) if t.st == HostSt::Down => {
                            // Seen down already: the call failed as the
                            // host went away.
                        }
                        (HostOp::Shutdown, Err(err)) if err.kind() == ErrorKind::Timeout => {
                            // It may have been delivered (a host halting
                            // drops its connections): not resent; whether
                            // it goes down is observed, up to
                            // `host_down_deadline`.
                            t.attempts += 1;
                            t.unconfirmed = true;
                        }
                        (HostOp::Shutdown, Err(err)) => {
                            t.attempts += 1;
                            if err.is_transient() && retry.may_retry(t.attempts) {
                                t.st = if t.maint { HostSt::InMaint } else { HostSt::Up };
                                t.retry_at = Some(retry.next(now));
                            } else {
                                t.st = HostSt::Failed {
                                    error: err.to_string(),
                                };
                            }
                        }
                        (HostOp::ShutdownForce, Ok(())) => {}
                        (HostOp::ShutdownForce, Err(err)) => {
                            t.attempts += 1;
                            if err.is_transient() && retry.may_retry(t.attempts) {
                                t.st = HostSt::Up;
                                t.retry_at = Some(retry.next(now));
                            } else {
                                t.st = HostSt::Failed {
                                    error: err.to_string(),
                                };
                            }
                        }
                        (HostOp::PowerOn, Ok(())) => {}
                        (HostOp::PowerOn, Err(err))
                            if matches!(
                                err.kind(),
                                ErrorKind::Unsupported | ErrorKind::Auth | ErrorKind::Config
                            ) =>
                        {
                            // Sending it again cannot help: restore waits
                            // for the host as it would without a method.
                            t.no_power_on = true;
                            notes.push(format!(
                                "{host}: its power-on method refused ({err}); it is not sent again"
                            ));
                        }
                        // Unreachable BMC, timeout: sent again at the next
                        // interval (see `Sequencer::power_on_interval`).
                        (HostOp::PowerOn, Err(_)) => {}
                        (HostOp::ExitMaintenance, Ok(())) => t.maint = false,
                        // A host that does not answer (still halting, off,
                        // booting) is asked again once it answers, within
                        // its restore wait: maintenance mode survives a
                        // reboot (ESXi), and no VM starts on a host in it.
                        // Given up after the retries, a slow halt's host
                        // came back in maintenance and its VMs were refused
                        // (seed 1502058772).
                        (HostOp::ExitMaintenance, Err(err))
                            if err.kind() == ErrorKind::Unreachable =>
                        {
                            t.exit_maint_sent = false;
                            t.retry_at = Some(retry.next(now));
                        }
                        (HostOp::ExitMaintenance, Err(err)) => {
                            t.attempts += 1;
                            if err.is_transient() && retry.may_retry(t.attempts) {
                                t.exit_maint_sent = false;
                                t.retry_at = Some(retry.next(now));
                            } else {
                                t.maint = false;
                            }
                        }
                        _ => {}
                    }
                }
            }
            // Nothing depends on them: a failure is in the audit. (Hooks
            // are finished above; one here was never in flight.)
            (Command::Detach { .. } | Command::Attach { .. } | Command::Hook { .. }, _) => {}
            (Command::Device { device, cmd: dc }, r) => {
                if let Some(f) = e
                    .finals
                    .iter_mut()
                    .find(|f| &f.device == device && &f.cmd == dc)
                {
                    match r {
                        Ok(()) => f.done = true,
                        Err(err) => {
                            f.attempts += 1;
                            // Unreachable: never delivered, safe to resend. A
                            // timeout may have been delivered: not resent.
                            if err.kind() == ErrorKind::Unreachable && retry.may_retry(f.attempts) {
                                f.sent = false;
                                f.retry_at = Some(retry.next(now));
                            } else {
                                f.done = true;
                            }
                        }
                    }
                }
            }
        }
        for text in notes {
            self.note(now, e.id, text);
        }
        self.episode = Some(e);
    }
}
