"""The ``/v1`` routes and the public ``/crl``. Each route parses, calls one service
function and renders; errors are mapped in :mod:`iotsec.api.problems`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response
from fastapi.concurrency import run_in_threadpool

from iotsec.api.deps import AdminDep, AuditorDep, OperatorDep, RuntimeDep
from iotsec.api.schemas import (
    DeviceIn,
    IssueIn,
    KeygenIn,
    RenewIn,
    RevokeIn,
)
from iotsec.app.broker.device_state import change_state_and_sync
from iotsec.app.broker.infrastructure import replace_infrastructure
from iotsec.app.enrol.est import approve as approve_enrolment
from iotsec.app.identity import devices
from iotsec.app.identity.device_detail import device_detail
from iotsec.app.pki import (
    bundles,
    cert_records,
    group_issuance,
    issuance,
    revocation,
)
from iotsec.app.pki.authorities import authority_crl, resolve_ca
from iotsec.app.pki.ca_publication import (
    complete_key,
    delta_key,
    load_served_complete,
    load_served_delta_of,
    load_served_partition_of,
)
from iotsec.app.pki.crl import (
    PublishedCrl,
    load_served_crl,
    load_served_delta,
    served,
    served_crl,
)
from iotsec.app.pki.partition_crl import MAX_PARTITION, load_served_partition, partition_key
from iotsec.app.runtime import Runtime
from iotsec.app.wire.identity import (
    CertificateOut,
    DeviceDetailOut,
    DeviceOut,
    KeygenOut,
    ReplacementOut,
    RevokedOut,
)
from iotsec.errors import OfflineKeyError
from iotsec.identity.registry import DeviceState
from iotsec.pki.crl import RevocationReason
from iotsec.pki.keys import KeyType
from iotsec.timeutil import parse_duration

__all__ = [
    "add_device", "ca_chain", "crl", "crl_delta", "crl_partition", "disable_device",
    "enable_device", "healthz", "issue", "issue_keygen", "list_certificates", "list_devices",
    "public", "renew", "retire_device", "revoke", "revoke_device", "revoke_infrastructure",
    "show_certificate", "show_device", "v1"
]

public = APIRouter()
v1 = APIRouter(prefix="/v1")


@public.get("/healthz", include_in_schema=False)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _crl_response(published: PublishedCrl) -> Response:
    return Response(published.der, media_type="application/pkix-crl",
                    headers={"Cache-Control": "public, max-age=300"})


#: A CA named in a CRL URL: the active one of a role, or a store id (``iotsec ca list``).
_CA = "^(issuing|root|[1-9][0-9]{0,8})$"


@public.get("/crl", response_class=Response, responses={200: {
    "content": {"application/pkix-crl": {}},
    "description": "DER CRL of the issuing CA (or root, or the CA with that id)"}})
async def crl(rt: RuntimeDep, ca: Annotated[str, Query(pattern=_CA)] = "issuing") -> Response:
    # From memory on the event loop while it may be (see served), else from the store in
    # the thread pool; a CA named by its id (as certificates name it) likewise.
    if ca.isdigit():
        published = served(rt, complete_key(int(ca)))
        if published is None:
            published = await run_in_threadpool(load_served_complete, rt, int(ca))
        return _crl_response(published)
    published = served_crl(rt, ca)
    if published is None:
        published = await run_in_threadpool(_load_served, rt, ca)
    return _crl_response(published)


@public.get("/crl/delta", response_class=Response, responses={200: {
    "content": {"application/pkix-crl": {}},
    "description": "DER delta CRL (RFC 5280 5.2.4) of the issuing CA (or root, or the CA "
                   "with that id)"}})
async def crl_delta(rt: RuntimeDep,
                    ca: Annotated[str, Query(pattern=_CA)] = "issuing") -> Response:
    # Served like /crl: from memory while it may be, else from the store in a thread.
    if ca.isdigit():
        published = served(rt, delta_key(int(ca)))
        if published is None:
            published = await run_in_threadpool(load_served_delta_of, rt, int(ca))
        return _crl_response(published)
    published = served(rt, f"delta:{ca}")
    if published is None:
        published = await run_in_threadpool(load_served_delta, rt, ca)
    return _crl_response(published)


@public.get("/crl/p/{partition}", response_class=Response, responses={200: {
    "content": {"application/pkix-crl": {}},
    "description": "DER CRL of one partition of the issuing CA (or of the issuing CA with "
                   "that id; IOTSEC_CRL_PARTITIONS)"}})
async def crl_partition(rt: RuntimeDep,
                        partition: Annotated[int, Path(ge=0, le=MAX_PARTITION)],
                        ca: Annotated[str, Query(pattern="^(issuing|[1-9][0-9]{0,8})$")]
                        = "issuing") -> Response:
    authority_id = int(ca) if ca.isdigit() else None
    published = served(rt, partition_key(partition, authority_id))
    if published is None:
        if authority_id is None:
            published = await run_in_threadpool(load_served_partition, rt, partition)
        else:
            published = await run_in_threadpool(load_served_partition_of, rt, partition,
                                                authority_id)
    return _crl_response(published)


def _load_served(rt: Runtime, ca: str) -> PublishedCrl:
    try:
        return load_served_crl(rt, ca)
    except OfflineKeyError:
        # An offline root cannot re-sign: the CRL it signed before its key left is served
        # while it is current.
        return authority_crl(rt, resolve_ca(rt, ca))


@v1.get("/ca/chain", response_class=Response,
        responses={200: {"content": {"application/pem-certificate-chain": {}}}})
def ca_chain(rt: RuntimeDep, _: AuditorDep) -> Response:
    return Response(bundles.chain_pem(rt), media_type="application/pem-certificate-chain")


@v1.post("/devices", status_code=201)
def add_device(body: DeviceIn, rt: RuntimeDep, caller: OperatorDep) -> DeviceOut:
    new = devices.NewDevice.parse(body.id, body.groups, body.attributes)
    return DeviceOut.from_domain(devices.add_device(rt, new, actor=caller.name))


@v1.get("/devices")
def list_devices(
    rt: RuntimeDep, _: AuditorDep,
    group: Annotated[str | None, Query(max_length=128)] = None,
    state: Annotated[str | None, Query(
        pattern="^(pending|active|disabled|retired|awaiting-approval|quarantined)$")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    after: Annotated[str | None, Query(max_length=128)] = None,
) -> list[DeviceOut]:
    found = devices.list_devices(rt, group=group, state=DeviceState(state) if state else None,
                                 limit=limit, after=after)
    return [DeviceOut.from_domain(d) for d in found]


@v1.get("/devices/{device_id}")
def show_device(device_id: str, rt: RuntimeDep, _: AuditorDep) -> DeviceDetailOut:
    d = device_detail(rt, device_id)
    return DeviceDetailOut.from_records(d.device, d.certificates, d.now, d.profile)


@v1.post("/devices/{device_id}/certificates", status_code=201)
def issue(device_id: str, body: IssueIn, rt: RuntimeDep, caller: OperatorDep) -> CertificateOut:
    # Concurrent requests share one transaction (group commit), each answered once its
    # certificate is committed.
    record = group_issuance.issue_grouped(rt, device_id, body.csr.encode("utf-8"),
                                          days=body.days, actor=caller.name,
                                          profile=body.profile,
                                          allow_shared_key=body.allow_shared_key)
    return CertificateOut.from_domain(record, rt.now(), with_pem=True)


@v1.post("/devices/{device_id}/certificates/keygen", status_code=201)
def issue_keygen(device_id: str, body: KeygenIn, rt: RuntimeDep, _: OperatorDep) -> KeygenOut:
    bundle = bundles.issue_with_keygen(rt, device_id, key_type=KeyType.parse(body.key_type),
                                       days=body.days, profile=body.profile,
                                       p12_passphrase=body.pkcs12_passphrase.encode("utf-8"))
    return KeygenOut.from_domain(bundle, rt.now())


@v1.post("/devices/{device_id}/revoke")
def revoke_device(device_id: str, body: RevokeIn, rt: RuntimeDep, caller: OperatorDep
                  ) -> RevokedOut:
    reason = RevocationReason.parse(body.reason)
    return RevokedOut.from_domain(revocation.revoke_device(rt, device_id, reason,
                                                           actor=caller.name), reason)


@v1.get("/certificates")
def list_certificates(
    rt: RuntimeDep, _: AuditorDep,
    device: Annotated[str | None, Query(max_length=128)] = None,
    expiring_within: Annotated[str | None, Query(max_length=16)] = None,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 1000,
) -> list[CertificateOut]:
    window = parse_duration(expiring_within) if expiring_within else None
    now = rt.now()
    return [CertificateOut.from_domain(c, now) for c in
            cert_records.list_certificates(rt, device_id=device, expiring_within=window,
                                           limit=limit)]


@v1.get("/certificates/{serial}")
def show_certificate(serial: str, rt: RuntimeDep, _: AuditorDep) -> CertificateOut:
    return CertificateOut.from_domain(cert_records.get_certificate(rt, serial), rt.now(),
                                      with_pem=True)


@v1.post("/certificates/{serial}/revoke")
def revoke(serial: str, body: RevokeIn, rt: RuntimeDep, caller: OperatorDep) -> CertificateOut:
    record = revocation.revoke(rt, serial, RevocationReason.parse(body.reason),
                               actor=caller.name)
    return CertificateOut.from_domain(record, rt.now())


@v1.post("/infrastructure/certificates/{serial}/revoke")
def revoke_infrastructure(serial: str, body: RevokeIn, rt: RuntimeDep, _: AdminDep
                          ) -> ReplacementOut:
    """Revoke one of iotsec's own certificates and replace it at once (the API's server
    certificate loaded by a running server within seconds; the broker of IOTSEC_BROKER_DIR
    synced)."""
    done = replace_infrastructure(rt, serial, RevocationReason.parse(body.reason))
    return ReplacementOut.from_domain(done, rt.now())


@v1.post("/certificates/{serial}/renew", status_code=201)
def renew(serial: str, body: RenewIn, rt: RuntimeDep, caller: OperatorDep) -> CertificateOut:
    grace = parse_duration(body.grace) if body.grace else None
    record = issuance.renew(rt, serial, body.csr.encode("utf-8"), days=body.days, grace=grace,
                            actor=caller.name,
                            allow_shared_key=body.allow_shared_key)
    return CertificateOut.from_domain(record, rt.now(), with_pem=True)


# One route per lifecycle action, not ``/devices/{device_id}/{action}``: a catch-all
# segment would also take the fixed sub-paths of other routers (``/roles``, ``/keys``),
# depending on the order in which the routers are included.
@v1.post("/devices/{device_id}/disable")
def disable_device(device_id: str, rt: RuntimeDep, caller: OperatorDep) -> DeviceOut:
    return DeviceOut.from_domain(change_state_and_sync(rt, device_id, DeviceState.DISABLED,
                                              actor=caller.name))


@v1.post("/devices/{device_id}/enable")
def enable_device(device_id: str, rt: RuntimeDep, caller: OperatorDep) -> DeviceOut:
    return DeviceOut.from_domain(change_state_and_sync(rt, device_id, DeviceState.ACTIVE,
                                              actor=caller.name))


@v1.post("/devices/{device_id}/approve")
def approve_device(device_id: str, rt: RuntimeDep, caller: OperatorDep) -> DeviceOut:
    """A device that enrolled under a template with approval required, awaiting it: it
    becomes pending, and its next EST request gets its certificate."""
    return DeviceOut.from_domain(approve_enrolment(rt, device_id, actor=caller.name))


@v1.post("/devices/{device_id}/retire")
def retire_device(device_id: str, rt: RuntimeDep, caller: OperatorDep) -> DeviceOut:
    return DeviceOut.from_domain(change_state_and_sync(rt, device_id, DeviceState.RETIRED,
                                              actor=caller.name))
