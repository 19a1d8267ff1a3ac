"""The zone policy file's schema: which keys each section takes, with their types and sizes
(pydantic, strict, unknown keys refused). What the values mean (names, addresses, overlaps,
references between zones and rules) is checked by :mod:`iotsec.netseg.policy`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["MAX_RULES", "MAX_ZONES", "FirewallDoc", "PolicyDoc", "RuleDoc", "ZoneDoc"]

MAX_ZONES = 10_000
MAX_RULES = 100_000


class FirewallDoc(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    table: str = Field(default="iotsec", max_length=64)
    addresses: list[str] = Field(default_factory=list, max_length=1024)
    log_drops: bool = False
    log_prefix: str = Field(default="iotsec drop: ", max_length=128)
    anti_spoofing: bool = True


class ZoneDoc(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field(max_length=64)
    vlan: int | None = None
    subnets: list[str] = Field(min_length=1, max_length=1024)
    interface: str | None = Field(default=None, max_length=64)
    admin: bool = False
    management: bool = False
    description: str = Field(default="", max_length=1024)


class RuleDoc(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str | None = Field(default=None, max_length=128)
    action: Literal["allow", "deny", "reject"]
    from_: Any = Field(alias="from")
    to: Any
    proto: Any = None
    ports: Any = None
    services: Any = None
    log: bool = False
    description: str = Field(default="", max_length=1024)


class PolicyDoc(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    version: Literal[1] = 1
    firewall: FirewallDoc = Field(default_factory=FirewallDoc)
    # Items are validated one by one (``ZoneDoc``/``RuleDoc``), so that a bad item is
    # reported together with every other problem of the file.
    zones: list[Any] = Field(default_factory=list, max_length=MAX_ZONES)
    rules: list[Any] = Field(default_factory=list, max_length=MAX_RULES)
