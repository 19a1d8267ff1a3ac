"""The detector loop of ``iotsec serve``: take the lease, and while holding it follow the
broker log and the EMQX hook events (:class:`~iotsec.app.detect.follow.Follower`), run
the mitigation actions of new alerts, and run the schedules: the alert checks and
deliveries, the scheduled audit, update campaign ticks and the event chain's signed
checkpoints.
Every serving process runs this loop; only the lease holder does the work, and another
takes over within ``IOTSEC_DETECT_LEASE_SECONDS`` (plus one renewal) when it stops."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from iotsec.app.detect.actions import mitigate, mitigate_findings
from iotsec.app.detect.follow import Follower
from iotsec.app.detect.lease import LeaseLostError, acquire, holder_name, release
from iotsec.app.monitor.audit_alerts import audit_alerts_due, run_audit_alerts
from iotsec.app.monitor.chain import checkpoint
from iotsec.app.monitor.checks import run_checks
from iotsec.app.monitor.delivery import deliver_due
from iotsec.app.ota.tick import tick
from iotsec.app.runtime import Runtime
from iotsec.broker.mosquitto import Layout

__all__ = ["Leader", "detector_loop", "log_file_of"]

log = logging.getLogger("iotsec.detect")
_DELIVERY_SECONDS = 5.0


def log_file_of(broker_dir: Path | None) -> Path | None:
    """The Mosquitto log of a rendered broker directory (``DIR/run/mosquitto.log``)."""
    return Layout(broker_dir.expanduser().absolute()).log_file if broker_dir else None


def _guarded(what: str, job: Callable[[Runtime], object], rt: Runtime) -> None:
    try:
        job(rt)
    except Exception:  # the other schedules go on; the failure is in the log
        log.exception("%s failed", what)


class Leader:
    """One process's part in the loop: the lease, and the follower while it holds it."""

    def __init__(self, rt: Runtime, *, holder: str | None = None,
                 log_file: Path | None = None, checks: bool = True) -> None:
        self.rt = rt
        self.holder = holder or holder_name()
        self.log_file = log_file
        self.checks = checks
        self.ttl = rt.settings.detect_lease_seconds
        self.follower: Follower | None = None
        self.last_renew = 0.0
        self.last_checks = 0.0
        self.last_delivery = 0.0
        self.last_tick = 0.0
        self.last_checkpoint = 0.0
        self.lines = 0  # read by this process
        self.alerts: list[int] = []  # new alerts this process raised

    @property
    def holding(self) -> bool:
        return self.follower is not None

    def drop(self) -> None:
        if self.follower is not None:
            self.follower.close()
            self.follower = None

    def once(self) -> bool:
        """One turn; whether there was work (then the next turn comes at once)."""
        # The store's lease runs on the same clock (time is a parameter of the runtime).
        now = self.rt.now().timestamp()
        if self.follower is None or now - self.last_renew >= self.ttl / 3:
            token = acquire(self.rt, self.holder, self.ttl)
            self.last_renew = now
            if token is None:
                self.drop()
                return False
            if self.follower is None or self.follower.token != token:
                self.drop()
                self.follower = Follower(self.rt, self.log_file, self.holder, token,
                                         self.ttl)
                log.info("this process holds the detector lease (token %d)", token)
        assert self.follower is not None
        try:
            result = self.follower.step()
        except LeaseLostError:
            log.warning("the detector lease was taken over; this process stands by")
            self.drop()
            return False
        if result.busy:
            self.last_renew = now  # the step renewed the lease
        self.lines += result.lines
        self.alerts += [r.alert_id for r in result.new_alerts]
        for raised in result.new_alerts:
            mitigate(self.rt, raised, self.follower.rules.rules)
        self._schedules(now)
        return result.busy

    def _schedules(self, now: float) -> None:
        if not self.checks:
            return
        if now - self.last_renew >= self.ttl / 2:
            # Not renewed lately (the lease may be another's soon): no schedule runs.
            return
        settings = self.rt.settings
        interval = settings.alert_tick_seconds
        if interval > 0 and now - self.last_checks >= interval:
            self.last_checks = now
            run_checks(self.rt)
            if audit_alerts_due(self.rt):
                _guarded("the scheduled audit", self._audit, self.rt)
        if interval > 0 and now - self.last_delivery >= _DELIVERY_SECONDS:
            self.last_delivery = now
            deliver_due(self.rt)
        if settings.campaign_tick_seconds > 0 and \
                now - self.last_tick >= settings.campaign_tick_seconds:
            self.last_tick = now
            _guarded("update campaign evaluation", tick, self.rt)
        if settings.event_checkpoint_seconds > 0 and \
                now - self.last_checkpoint >= settings.event_checkpoint_seconds:
            self.last_checkpoint = now
            _guarded("an event-log checkpoint", checkpoint, self.rt)

    def _audit(self, rt: Runtime) -> None:
        """The scheduled audit, and the actions the rule file binds to its new findings."""
        found = run_audit_alerts(rt)
        if self.follower is not None:
            mitigate_findings(rt, found.raised, self.follower.rules.rules)

    def stop(self) -> None:
        was = self.holding
        self.drop()
        if was:
            release(self.rt, self.holder)


def detector_loop(rt: Runtime, stop: threading.Event, *, holder: str | None = None,
                  log_file: Path | None = None) -> None:
    """For ``iotsec serve`` (and ``iotsec detect run``): until ``stop`` is set.
    ``log_file``: the Mosquitto log (default: that of IOTSEC_BROKER_DIR)."""
    interval = rt.settings.detect_tick_seconds
    if interval <= 0:
        return
    leader = Leader(rt, holder=holder,
                    log_file=log_file or log_file_of(rt.settings.broker_dir))
    try:
        while not stop.is_set():
            try:
                busy = leader.once()
            except Exception:  # keep going; the failure is in the log
                log.exception("detection failed; retrying")
                leader.drop()
                busy = False
            if not busy:
                stop.wait(interval if leader.holding else min(1.0, leader.ttl / 3))
    finally:
        leader.stop()
