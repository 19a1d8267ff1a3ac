"""The ``/v1/profiles`` routes (certificate profiles) and the profile a device or a group
selects. Auditors read; operators and admins change."""

from __future__ import annotations

from fastapi import APIRouter

from iotsec.api.deps import AuditorDep, OperatorDep, RuntimeDep
from iotsec.api.schemas import ProfileIn, ProfileSelectIn
from iotsec.app.pki import profiles
from iotsec.app.wire.enrol import RemovedOut
from iotsec.app.wire.profiles import ProfileOut, ProfileSelectionOut
from iotsec.pki.profiles import CertProfile

__all__ = [
    "add_profile", "list_profiles", "remove_profile", "router", "select_device_profile",
    "select_group_profile", "show_profile"
]

router = APIRouter(prefix="/v1")


@router.get("/profiles")
def list_profiles(rt: RuntimeDep, _: AuditorDep) -> list[ProfileOut]:
    return [ProfileOut.from_domain(p) for p in profiles.list_profiles(rt)]


@router.post("/profiles", status_code=201)
def add_profile(body: ProfileIn, rt: RuntimeDep, _: OperatorDep) -> ProfileOut:
    profile = CertProfile.parse(body.name, days=body.days, key_types=body.key_types,
                                ekus=body.ekus, dns_from=body.dns_from,
                                no_revocation=body.no_revocation)
    return ProfileOut.from_domain(profiles.add_profile(rt, profile))


@router.get("/profiles/{name}")
def show_profile(name: str, rt: RuntimeDep, _: AuditorDep) -> ProfileOut:
    stored, usage = profiles.get_profile(rt, name)
    return ProfileOut.from_domain(stored, usage)


@router.delete("/profiles/{name}")
def remove_profile(name: str, rt: RuntimeDep, _: OperatorDep) -> RemovedOut:
    profiles.remove_profile(rt, name)
    return RemovedOut(kind="profile", name=name)


@router.put("/devices/{device_id}/profile")
def select_device_profile(device_id: str, body: ProfileSelectIn, rt: RuntimeDep,
                          _: OperatorDep) -> ProfileSelectionOut:
    """The profile the device's certificates are issued under (``null``: none of its own)."""
    now = profiles.set_device_profile(rt, device_id, body.profile)
    return ProfileSelectionOut(kind="device", name=device_id, profile=now)


@router.put("/groups/{name}/profile")
def select_group_profile(name: str, body: ProfileSelectIn, rt: RuntimeDep,
                         _: OperatorDep) -> ProfileSelectionOut:
    """The profile the group's members' certificates are issued under (``null``: none)."""
    now = profiles.set_group_profile(rt, name, body.profile)
    return ProfileSelectionOut(kind="group", name=name, profile=now)
