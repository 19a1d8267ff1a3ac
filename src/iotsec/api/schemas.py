"""Request bodies (pydantic): what comes from outside is validated here. Response bodies are
the wire models of :mod:`iotsec.app.wire`, which ``--json`` prints too."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "MAX_INT32", "MAX_INT64", "MIN_INT64", "DeviceIn", "IssueIn", "KeygenIn", "ProfileIn",
    "ProfileSelectIn", "RenewIn", "RevokeIn", "Strict"
]

#: The largest integer the API accepts anywhere (a signed 64-bit integer, the widest column
#: of the store): a larger one would overflow in the database driver, so it is refused as
#: invalid input before it gets there.
MAX_INT64 = 2**63 - 1
MIN_INT64 = -(2**63)
#: The largest id of a row keyed by an ``Integer`` column (campaigns, releases): a signed
#: 32-bit integer on PostgreSQL.
MAX_INT32 = 2**31 - 1


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AuthzIn(Strict):
    device: str = Field(max_length=512)
    action: str = Field(max_length=64)
    resource: str = Field(max_length=70_000)
    cert_serial: str | None = Field(default=None, max_length=64)


class DeviceIn(Strict):
    id: str = Field(max_length=512)
    groups: list[str] = Field(default_factory=list, max_length=64)
    attributes: dict[str, str] = Field(default_factory=dict)


class IssueIn(Strict):
    csr: str = Field(description="PEM certificate signing request", max_length=70_000)
    days: int | None = Field(default=None, ge=1, le=36_500)
    profile: str | None = Field(default=None, max_length=64, description="certificate "
                                "profile (default: the device's, its groups', else device)")
    allow_shared_key: bool = Field(
        default=False, description="issue even if another identity's valid certificate "
        "certifies the same key (recorded as a cert.shared-key event)")


class KeygenIn(Strict):
    pkcs12_passphrase: str = Field(min_length=8, max_length=1024)
    key_type: str = "ecdsa-p256"
    days: int | None = Field(default=None, ge=1, le=36_500)
    profile: str | None = Field(default=None, max_length=64)


class ProfileIn(Strict):
    """A named certificate profile (see ``iotsec profile add``)."""

    name: str = Field(max_length=64)
    days: int = Field(ge=1, le=36_500)
    key_types: list[str] = Field(min_length=1, max_length=16)
    ekus: list[str] = Field(default_factory=lambda: ["clientAuth"], min_length=1,
                            max_length=8)
    dns_from: list[str] = Field(default_factory=list, max_length=16)
    no_revocation: bool = False


class ProfileSelectIn(Strict):
    profile: str | None = Field(max_length=64, description="a profile name; null clears")


class RevokeIn(Strict):
    reason: str = Field(default="unspecified", max_length=64)


class RenewIn(Strict):
    csr: str = Field(max_length=70_000)
    days: int | None = Field(default=None, ge=1, le=36_500)
    grace: str | None = Field(default=None, max_length=16, description="e.g. 7d")
    allow_shared_key: bool = Field(
        default=False, description="as for issuing: accept a key another identity holds")
