"""The issuance fast path: ``POST /v1/devices/{id}/certificates`` without the framework's
per-request cost.

A fleet that enrols through the operator API issues a certificate per device, and over
HTTPS the framework's routing, dependency resolution and response model cost about as much
as the grouped issuance itself. This ASGI layer (see :mod:`iotsec.api.fastpath`) answers a
request that carries a bearer token and a JSON body that the route's own request model
(:class:`~iotsec.api.schemas.IssueIn`) accepts, with the functions the route uses:
:func:`~iotsec.app.access.api_tokens.authenticate` for the ``operator`` scope,
:func:`~iotsec.app.pki.group_issuance.issue_grouped_async` (awaited on the loop: the
issuance runs in the group commit's thread, and no thread waits for it), the fields of the
route's answer model (:func:`~iotsec.app.wire.identity_fields.certificate_fields`, which
``CertificateOut`` is built from) and
:func:`~iotsec.api.problems.for_error`. Anything else — another path or method, a body the
model refuses, no bearer token — goes to the application unchanged, which answers it as it
would without this layer. A test checks that both give the same answers.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

from pydantic import ValidationError

from iotsec.api.fastpath import BearerFastPath
from iotsec.api.limits import MAX_BODY
from iotsec.api.schemas import IssueIn
from iotsec.app.access.api_tokens import Principal
from iotsec.app.access.api_tokens import Scope as TokenScope
from iotsec.app.pki import group_issuance
from iotsec.app.pki.cert_records import CertificateRecord
from iotsec.app.runtime import Runtime
from iotsec.app.wire.identity_fields import certificate_fields

__all__ = ["PATH", "IssuanceFastPath"]

PATH: Final = "/v1/devices/{device_id}/certificates"
# The route's path parameter matches one path segment (the router's default).
_PATH = re.compile(r"/v1/devices/([^/]+)/certificates")


async def _issue(rt: Runtime, device_id: str, body: IssueIn, actor: str) -> CertificateRecord:
    # Concurrent requests share one transaction (group commit), each answered once its
    # certificate is committed, as in the route; awaited here, so no thread waits for it.
    return await group_issuance.issue_grouped_async(
        rt, device_id, body.csr.encode("utf-8"), days=body.days, actor=actor,
        profile=body.profile, allow_shared_key=body.allow_shared_key)


class IssuanceFastPath(BearerFastPath):
    """``POST /v1/devices/{id}/certificates``, answered 201 with the certificate."""

    path = PATH
    needed = TokenScope.OPERATOR
    max_body = MAX_BODY
    status = 201

    def route(self, path: str) -> Any:
        match = _PATH.fullmatch(path)
        return match[1] if match else None

    def prepare(self, headers: dict[bytes, bytes], body: bytes, route: Any) -> Any:
        if not headers.get(b"content-type", b"").startswith(b"application/json"):
            return None
        try:
            # As the framework validates the body: JSON, then the model.
            return route, IssueIn.model_validate(json.loads(body))
        except (ValueError, UnicodeDecodeError, ValidationError):
            return None

    async def answer(self, prepared: Any, source: str | None,
                     caller: Principal) -> dict[str, Any]:
        device_id, body = prepared
        record = await _issue(self.rt, device_id, body, caller.name)
        return certificate_fields(record, self.rt.now(), with_pem=True)
