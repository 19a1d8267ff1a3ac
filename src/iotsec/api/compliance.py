"""Compliance routes: the report of a framework (auditor), and its attestations (read:
auditor; record: admin)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from iotsec.api.deps import AdminDep, AuditorDep, RuntimeDep
from iotsec.app.compliance import reports as service
from iotsec.app.wire.records import AttestationOut
from iotsec.compliance.evidence import MAX_NOTE
from iotsec.compliance.report import compliance_json

__all__ = ["AttestationIn", "FrameworkPath", "attest", "attestations", "report", "router"]

router = APIRouter(prefix="/v1/compliance")
FrameworkPath = Annotated[str, Path(max_length=64, description="etsi-en-303-645, "
                                    "nistir-8259a or owasp-iot-top10")]


class AttestationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    provision: str = Field(min_length=1, max_length=48, description="e.g. 5.2-1 or I6")
    status: str = Field(max_length=16,
                        description="pass, fail, partial, manual or not_applicable")
    note: str = Field(min_length=1, max_length=MAX_NOTE, description="the justification")


@router.get("/{framework}")
def report(rt: RuntimeDep, who: AuditorDep, framework: FrameworkPath) -> dict[str, Any]:
    """The compliance report (JSON, format iotsec-compliance-report version 1)."""
    result = service.report(rt, framework, actor=f"token:{who.name}")
    return compliance_json(result)


@router.get("/{framework}/attestations")
def attestations(rt: RuntimeDep, _: AuditorDep, framework: FrameworkPath,
                 history: Annotated[bool, Query()] = False) -> list[AttestationOut]:
    return [AttestationOut.from_domain(a)
            for a in service.attestations(rt, framework, history=history)]


@router.post("/{framework}/attestations", status_code=201)
def attest(rt: RuntimeDep, who: AdminDep, framework: FrameworkPath, body: AttestationIn
           ) -> AttestationOut:
    request = service.AttestationRequest(framework=framework, provision=body.provision,
                                         status=body.status, note=body.note,
                                         actor=f"token:{who.name}")
    return AttestationOut.from_domain(service.attest(rt, request))
