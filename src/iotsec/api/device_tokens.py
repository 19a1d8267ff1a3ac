"""Device token routes: verify a device JWT (for brokers and gateways) and manage the
public keys devices sign their tokens with. A refused token is a 401 problem whose type
names the reason (e.g. ``urn:iotsec:problem:device-token-expired``)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from iotsec.api.deps import AdminDep, AuditorDep, OperatorDep, RuntimeDep
from iotsec.app.identity import device_tokens as service
from iotsec.app.wire.identity import DeviceKeyOut, KeyCreatedOut, VerifiedOut
from iotsec.identity.device_tokens import MAX_PUBLIC_KEY_BYTES, MAX_TOKEN_BYTES

__all__ = ["KeyIn", "VerifyIn", "list_keys", "register_key", "router", "verify_token"]

router = APIRouter(prefix="/v1")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VerifyIn(_Strict):
    # Twice the core's limit, so that an over-long token gets the specific
    # device-token-malformed answer from the verifier rather than a schema error.
    token: str = Field(max_length=2 * MAX_TOKEN_BYTES, description="the device's compact JWT")


class KeyIn(_Strict):
    public_key_pem: str = Field(max_length=MAX_PUBLIC_KEY_BYTES,
                                description="PEM SubjectPublicKeyInfo: EC P-256 or Ed25519")


@router.post("/device-tokens/verify")
def verify_token(body: VerifyIn, request: Request, rt: RuntimeDep, _: AdminDep
                 ) -> VerifiedOut:
    # Not throttled: the caller is an authenticated broker or gateway asking on a device's
    # behalf, and one device's bad token must not lock it out.
    verified = service.verify(rt, body.token,
                              source=request.client.host if request.client else None,
                              action="POST /v1/device-tokens/verify")
    return VerifiedOut.from_domain(verified)


@router.post("/devices/{device_id}/keys", status_code=201)
def register_key(device_id: str, body: KeyIn, rt: RuntimeDep, _: OperatorDep) -> KeyCreatedOut:
    return KeyCreatedOut(kid=service.register_key(rt, device_id,
                                                  body.public_key_pem.encode("utf-8")))


@router.get("/devices/{device_id}/keys")
def list_keys(device_id: str, rt: RuntimeDep, _: AuditorDep) -> list[DeviceKeyOut]:
    now = rt.now()
    return [DeviceKeyOut.from_domain(k, now) for k in service.list_keys(rt, device_id)]
