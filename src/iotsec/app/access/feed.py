"""What a serving process follows on the change feed (:mod:`iotsec.app.changes`), besides
the registry and the policy (which :mod:`iotsec.app.access.decisions` follows itself):

- a certificate revoked: the CRLs and OCSP answers held in memory are read again
  (:func:`iotsec.app.pki.revocation.follow_revocations`);
- an API token revoked, expired early, re-scoped or deleted: its lookup is forgotten, so
  the next request with it reads the store;
- a CA made, rotated or retired: the active CAs are looked up again at the next use.

After the feed's connection is (re)made, all of these are dropped at once.
"""

from __future__ import annotations

from iotsec.app import changes
from iotsec.app.access.api_tokens import LOOKUP_PREFIX
from iotsec.app.changes import Change, Listener
from iotsec.app.pki.revocation import follow_revocations
from iotsec.app.runtime import Runtime

__all__ = ["follow_changes"]


def follow_changes(rt: Runtime) -> Listener | None:
    """Subscribe this process's per-process caches of security state to the change feed
    and start listening (``None`` on SQLite, which has no feed)."""
    follow_revocations(rt)

    def on_changes(batch: list[Change] | None) -> None:
        for change in batch if batch is not None else [Change("token", "*"),
                                                       Change("authority", "*")]:
            if change.kind == "token":
                if change.key == "*":
                    rt.forget_prefix(LOOKUP_PREFIX)
                else:
                    rt.forget(LOOKUP_PREFIX + change.key)
            elif change.kind == "authority":
                rt.forget_prefix("authority.active.")

    changes.subscribe(rt, on_changes)
    return changes.listen(rt)
