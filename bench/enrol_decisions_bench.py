"""Decisions while devices enrol: does an enrolment make the same server's decisions read
the store again?

A serving process answers decisions (``POST /v1/authz/check``, the EMQX hooks) from the
registry entries it has cached, and enrols devices over EST in between. Each enrolment of a
template registers a new device just in time; nothing the process has cached is stale by
it (an unknown device is never cached), so the decisions of the devices it already knows
should go on being answered from memory.

* ours: a runtime with the serving cache (``IOTSEC_HOT_CACHE_SECONDS=60``) over a fresh
  SQLite home, ``--devices`` registered devices whose decisions are asked once to warm the
  cache; then rounds of one EST enrolment (``app.enrol.est.enrol``, a template secret, a new
  device created just in time) followed by ``--per-enrolment`` decisions for random known
  devices (``app.access.decisions.check``). The decisions alone are timed.
* reference, same run: the same decisions for the same devices, in the same rounds, with no
  enrolment in between (what a cache that is never dropped answers).

Reported: decisions per second in both, and their ratio (1.0 means an enrolment costs the
decisions nothing); every decision is allowed (the devices' default role).

Run: ``python bench/enrol_decisions_bench.py [--devices N] [--enrolments N]
[--per-enrolment N]``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from datetime import timedelta

from cryptography.hazmat.primitives import serialization

from common import Report, fresh_runtime, load_average, machine_info, print_machine
from est_bench import make_csr
from iotsec.app.access.decisions import check
from iotsec.app.enrol import est, secrets, templates
from iotsec.app.identity import devices
from iotsec.app.runtime import Runtime
from iotsec.identity.enrolment import Template


def _decide(rt: Runtime, ids: list[str]) -> float:
    """Seconds spent deciding for ``ids`` (each must be allowed)."""
    start = time.perf_counter()
    for device_id in ids:
        if not check(rt, device_id, "publish", f"devices/{device_id}/t").allowed:
            raise AssertionError(f"{device_id} was denied")
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument("--enrolments", type=int, default=300)
    parser.add_argument("--per-enrolment", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print_machine(machine_info())
    report = Report("Decisions while devices enrol (same process)", params={
        "known devices": args.devices, "enrolments per round": args.enrolments,
        "decisions after each enrolment": args.per_enrolment, "rounds": args.rounds,
        "load average at start": load_average()})
    ours: list[float] = []
    reference: list[float] = []
    with fresh_runtime("iotsec-bench-enrol-decide-") as rt:
        rt.settings.hot_cache_seconds = 60
        known = [f"known-{i:05d}" for i in range(args.devices)]
        devices.import_devices(rt, (devices.NewDevice.parse(d, ["fleet"]) for d in known))
        templates.add_template(rt, Template.parse("bench", groups=["fleet"],
                                                  id_from="csr-cn"))
        _decide(rt, known)  # every known device cached
        rnd = random.Random(7)
        made = 0
        for _ in range(args.rounds):
            batches = [[rnd.choice(known) for _ in range(args.per_enrolment)]
                       for _ in range(args.enrolments)]
            info, secret = secrets.create_secret(rt, device_id=None, template="bench",
                                                 uses=args.enrolments,
                                                 expires_in=timedelta(hours=1))
            credential = est.BasicCredential(info.id, secret)
            requests = []
            for _ in batches:
                csr = make_csr(f"new-{made:06d}")[1]
                made += 1
                requests.append(csr.public_bytes(serialization.Encoding.DER))
            with_enrolments = 0.0
            for request, ids in zip(requests, batches, strict=True):
                outcome = est.enrol(rt, credential, request, label=None, source="192.0.2.1")
                if not isinstance(outcome, est.Issued):
                    raise AssertionError(f"enrolment not issued: {outcome}")
                with_enrolments += _decide(rt, ids)
            alone = sum(_decide(rt, ids) for ids in batches)
            n = args.enrolments * args.per_enrolment
            ours.append(n / with_enrolments)
            reference.append(n / alone)
            print(f"# round: {ours[-1]:,.0f} decisions/s between enrolments, "
                  f"{reference[-1]:,.0f}/s without", flush=True)
    ratio = statistics.median(o / r for o, r in zip(ours, reference, strict=True))
    report.add("ours: decisions between enrolments", statistics.median(ours), "per s",
               "rounds " + ", ".join(f"{x:,.0f}" for x in ours))
    report.add("reference: the same decisions, no enrolment between them",
               statistics.median(reference), "per s",
               "rounds " + ", ".join(f"{x:,.0f}" for x in reference))
    report.add("ratio ours / reference", ratio, "x", "1.0: an enrolment costs the "
               "decisions of known devices nothing")
    report.params["load average at end"] = load_average()
    report.print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
