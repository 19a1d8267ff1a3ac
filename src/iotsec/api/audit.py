"""``GET /v1/audit``: the fleet audit report (auditor scope), as the JSON of
``iotsec audit --json``. Thresholds are query parameters; the broker directory is the
server's own setting (``IOTSEC_BROKER_DIR``), never chosen by the client."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from iotsec.api.deps import AuditorDep, RuntimeDep
from iotsec.api.schemas import MAX_INT64, MIN_INT64
from iotsec.app.audit import run_audit
from iotsec.audit.report import audit_json
from iotsec.audit.snapshot import AuditOptions
from iotsec.timeutil import parse_duration

__all__ = ["Days", "audit", "router"]

router = APIRouter(prefix="/v1")


#: The thresholds are checked against their own ranges by AuditOptions.parse (a 400 whose
#: message names the option and its range); the schema only keeps out integers that are
#: not 64-bit at all.
Days = Annotated[int, Query(ge=MIN_INT64, le=MAX_INT64)]


@router.get("/audit")
def audit(rt: RuntimeDep, principal: AuditorDep,
          ca_days: Annotated[Days, Query(description="CA expiry threshold in days")] = 180,
          cert_days: Annotated[Days, Query(description="device certificate expiry threshold "
                                                       "in days")] = 30,
          max_cert_age: Annotated[Days, Query(description="rotation policy in days")] = 398,
          window: Annotated[str, Query(max_length=16, description="events window, e.g. 24h")
                            ] = "24h",
          crl_hours: Annotated[Days, Query(description="broker CRL nextUpdate margin in "
                                                       "hours")] = 24,
          token_unused_days: Annotated[Days, Query(description="API token idle limit")] = 90,
          ) -> dict[str, Any]:
    """Run the fleet audit now and return its report (format ``iotsec-audit-report``)."""
    options = AuditOptions.parse(ca_days=ca_days, cert_days=cert_days,
                                 max_cert_age=max_cert_age, window=parse_duration(window),
                                 crl_hours=crl_hours, token_unused_days=token_unused_days)
    return audit_json(run_audit(rt, options, actor=principal.name))
