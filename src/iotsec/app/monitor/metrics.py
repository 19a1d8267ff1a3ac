"""``/metrics``: the Prometheus exposition of what this process counted and of the state
of the store.

Counted by the process (:mod:`iotsec.app.counters`, since it started): policy decisions by
result, API authentications by result, request latency by listener. Read from the store at
scrape time (at most once per ``IOTSEC_HOT_CACHE_SECONDS``, never less than 5 s apart):
certificates by state, valid certificates by days to expiry, devices by state, each CA's
CRL age and time to nextUpdate, the event chain's length and the age of its newest signed
checkpoint, and the Mosquitto directory's generation and its age when ``IOTSEC_BROKER_DIR``
is set.

With ``iotsec serve --workers N`` the counted series are those of the worker that answered
the scrape (each carries a ``worker`` label, its process id); the store's are the same
from every worker.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import Connection, and_, case, func, select

from iotsec import __version__
from iotsec.app.counters import COUNTERS
from iotsec.app.runtime import Runtime, Slot
from iotsec.store import models as m
from iotsec.store.db import reading
from iotsec.timeutil import ts

__all__ = ["CONTENT_TYPE", "EXPIRY_DAYS", "render"]

#: The Prometheus text format 0.0.4.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Valid certificates are counted by "expires within N days" for these N.
EXPIRY_DAYS = (1, 7, 30, 90, 365)
_MIN_STORE_INTERVAL = 5.0


def _store_facts(rt: Runtime) -> dict[str, Any]:
    now = ts(rt.now())
    d, crl = m.devices.c, m.crls.c
    facts: dict[str, Any] = {}
    with reading(rt.engine) as conn:
        facts["certificates"], facts["expiring"] = _certificate_counts(conn, now)
        facts["devices"] = dict(conn.execute(
            select(d.state, func.count()).group_by(d.state)).all())
        facts["crls"] = [
            (r.subject, r.role, now - r.this_update, r.next_update - now)
            for r in conn.execute(select(m.authorities.c.subject, m.authorities.c.role,
                                         crl.this_update, crl.next_update)
                                  .join(m.authorities, m.authorities.c.id == crl.authority_id))]
        al = m.alerts.c
        facts["alerts"] = [(str(r.state), str(r.severity), int(r.n)) for r in conn.execute(
            select(al.state, al.severity, func.count().label("n"))
            .where(al.state != "resolved").group_by(al.state, al.severity))]
        e = m.events.c
        facts["chain"] = int(conn.execute(select(func.coalesce(func.max(e.seq), 0)))
                             .scalar_one())
        last = conn.execute(select(func.max(m.event_checkpoints.c.at))).scalar_one()
        facts["checkpoint_age"] = None if last is None else now - int(last)
    broker_dir = rt.settings.broker_dir
    if broker_dir is not None:
        facts["broker"] = _broker_facts(broker_dir, time.time())
    return facts


def _by_expiry(now: int, where: tuple[Any, ...]) -> Any:
    """The certificates ``where`` selects: how many, how many expired, and how many expire
    within each of EXPIRY_DAYS (counted from ``not_after`` alone)."""
    c = m.certificates.c

    def among(condition: Any) -> Any:
        return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

    return select(func.count(), among(c.not_after <= now), *(
        among(and_(c.not_after > now, c.not_after <= now + days * 86400))
        for days in EXPIRY_DAYS)).where(*where)


def _certificate_counts(conn: Connection, now: int) -> tuple[dict[str, int], dict[int, int]]:
    """Certificates by state (a revocation in effect comes first, then expiry), and the
    valid ones by how soon they expire. Two index-only passes (migration 0030): every
    certificate over the ``not_after`` index, and the revoked ones over the partial CRL
    index; a certificate is valid when it is in neither count."""
    c = m.certificates.c
    total, expired, *expiring = (int(n) for n in conn.execute(_by_expiry(now, ())).one())
    revoked, revoked_expired, *revoked_expiring = (int(n) for n in conn.execute(
        _by_expiry(now, (c.revoked_at <= now,))).one())
    states = {"revoked": revoked, "expired": expired - revoked_expired,
              "valid": total - revoked - (expired - revoked_expired)}
    return ({state: n for state, n in states.items() if n},
            {days: n - r for days, n, r in zip(EXPIRY_DAYS, expiring, revoked_expiring,
                                                strict=True)})


def _broker_facts(directory: Path, now: float) -> tuple[int, float] | None:
    from iotsec.app.broker.files import current_generation  # deferred: broker only
    from iotsec.broker.mosquitto import Layout

    layout = Layout.parse(directory)
    generation = current_generation(layout)
    if generation is None:
        return None
    try:
        age = now - layout.generation(generation).stat().st_mtime
    except OSError:
        return None
    return generation, age


_FACTS: Slot[tuple[float, dict[str, Any]]] = Slot("metrics.store")


def _cached_facts(rt: Runtime) -> dict[str, Any]:
    held = rt.get(_FACTS)
    interval = max(_MIN_STORE_INTERVAL, rt.settings.hot_cache_seconds)
    if held is not None and time.monotonic() - held[0] < interval:
        return held[1]
    facts = _store_facts(rt)
    rt.put(_FACTS, (time.monotonic(), facts))
    return facts


class _Collector(Collector):
    def __init__(self, rt: Runtime) -> None:
        self._rt = rt

    def collect(self) -> Iterator[Metric]:
        worker = str(os.getpid())
        info = GaugeMetricFamily("iotsec_build_info", "iotsec's version", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        counts, histograms = COUNTERS.snapshot()
        decisions = CounterMetricFamily("iotsec_decisions", "Policy decisions by result",
                                        labels=["result", "worker"])
        auths = CounterMetricFamily("iotsec_authentications",
                                    "API token authentications by result",
                                    labels=["result", "worker"])
        for result in ("allow", "deny"):
            decisions.add_metric([result, worker], counts.get(("decisions", (result,)), 0))
        for result in ("success", "failure", "denied"):
            auths.add_metric([result, worker], counts.get(("authentications", (result,)), 0))
        yield decisions
        yield auths
        latency = HistogramMetricFamily("iotsec_http_request_duration_seconds",
                                        "Time to answer an HTTP request, by listener",
                                        labels=["listener", "worker"])
        for (name, labels), h in sorted(histograms.items()):
            if name != "http_request":
                continue
            cumulative, buckets = 0, []
            for bound, n in zip((*h.bounds, float("inf")), h.counts, strict=True):
                cumulative += n
                buckets.append(("+Inf" if bound == float("inf") else repr(bound),
                                cumulative))
            latency.add_metric([*labels, worker], buckets, h.total)
        yield latency
        yield from self._store()

    def _store(self) -> Iterator[Metric]:
        facts = _cached_facts(self._rt)
        certs = GaugeMetricFamily("iotsec_certificates", "Certificates in the store by state",
                                  labels=["state"])
        for state in ("valid", "revoked", "expired"):
            certs.add_metric([state], facts["certificates"].get(state, 0))
        yield certs
        expiring = GaugeMetricFamily("iotsec_certificates_expiring",
                                     "Valid certificates that expire within N days",
                                     labels=["within_days"])
        for days, count in facts["expiring"].items():
            expiring.add_metric([str(days)], count)
        yield expiring
        devices = GaugeMetricFamily("iotsec_devices", "Registered devices by state",
                                    labels=["state"])
        for state, count in sorted(facts["devices"].items()):
            devices.add_metric([state], count)
        yield devices
        age = GaugeMetricFamily("iotsec_crl_age_seconds", "Seconds since the CA's current "
                                "CRL was signed (its thisUpdate)", labels=["ca", "role"])
        left = GaugeMetricFamily("iotsec_crl_next_update_seconds", "Seconds until the CA's "
                                 "current CRL reaches its nextUpdate (negative: past it)",
                                 labels=["ca", "role"])
        for subject, role, since, until in facts["crls"]:
            age.add_metric([subject, role], since)
            left.add_metric([subject, role], until)
        yield age
        yield left
        alerts = GaugeMetricFamily("iotsec_alerts", "Alerts not resolved, by state (open, "
                                   "acknowledged) and severity", labels=["state", "severity"])
        for state, severity, count in sorted(facts["alerts"]):
            alerts.add_metric([state, severity], count)
        yield alerts
        chain = GaugeMetricFamily("iotsec_event_chain_length",
                                  "Entries in the tamper-evident event chain")
        chain.add_metric([], facts["chain"])
        yield chain
        if facts["checkpoint_age"] is not None:
            checkpoint = GaugeMetricFamily("iotsec_event_checkpoint_age_seconds",
                                           "Seconds since the newest signed checkpoint")
            checkpoint.add_metric([], facts["checkpoint_age"])
            yield checkpoint
        broker = facts.get("broker")
        if broker is not None:
            generation = GaugeMetricFamily("iotsec_broker_generation",
                                           "The Mosquitto directory's current generation")
            generation.add_metric([], broker[0])
            yield generation
            since = GaugeMetricFamily("iotsec_broker_generation_age_seconds",
                                      "Seconds since the current broker generation was made")
            since.add_metric([], broker[1])
            yield since


def render(rt: Runtime) -> bytes:
    """The metrics in the Prometheus text format (:data:`CONTENT_TYPE`)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(rt))
    return generate_latest(registry)
