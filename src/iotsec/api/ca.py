"""The ``/v1/ca`` routes: the CAs and their states (auditor), a rotation and the end of an
overlap (admin). Each parses, calls one service function and renders; errors are mapped
in :mod:`iotsec.api.problems`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response
from pydantic import Field

from iotsec.api.deps import AdminDep, AuditorDep, RuntimeDep
from iotsec.api.schemas import Strict
from iotsec.app.broker.rollover import retire_ca, rotate_ca
from iotsec.app.pki.authorities import list_authorities
from iotsec.app.pki.bundles import trust_bundle_pem
from iotsec.app.wire.ca import AuthorityOut, CaChangeOut
from iotsec.pki.keys import KeyType

__all__ = ["RotateIn", "list_cas", "retire", "rotate", "router", "trust_bundle"]

router = APIRouter(prefix="/v1/ca")


class RotateIn(Strict):
    new_root: bool = False
    cross: bool = True
    key_type: str | None = Field(default=None, max_length=16)


@router.get("")
def list_cas(rt: RuntimeDep, _: AuditorDep) -> list[AuthorityOut]:
    now = rt.now()
    return [AuthorityOut.from_domain(a, now) for a in list_authorities(rt)]


@router.get("/bundle", response_class=Response,
            responses={200: {"content": {"application/pem-certificate-chain": {}}}})
def trust_bundle(rt: RuntimeDep, _: AuditorDep) -> Response:
    return Response(trust_bundle_pem(rt), media_type="application/pem-certificate-chain")


@router.post("/rotate", status_code=201)
def rotate(body: RotateIn, rt: RuntimeDep, _: AdminDep) -> CaChangeOut:
    kind = None if body.key_type is None else KeyType.parse(body.key_type)
    change = rotate_ca(rt, new_root=body.new_root, cross=body.cross, key_type=kind)
    return CaChangeOut.from_domain(change, rt.now())


@router.post("/{authority_id}/retire")
def retire(authority_id: Annotated[int, Path(ge=1, le=2**31 - 1)], rt: RuntimeDep,
           _: AdminDep) -> CaChangeOut:
    return CaChangeOut.from_domain(retire_ca(rt, authority_id), rt.now())
