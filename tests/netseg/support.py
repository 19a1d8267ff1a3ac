"""Helpers shared by the network segmentation tests."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from iotsec.errors import NetsegPolicyError
from iotsec.netseg.model import Policy
from iotsec.netseg.policy import parse_policy
from tests.services import unavailable

HERE = Path(__file__).resolve().parent
SITE = HERE / "site.yml"


def tool(name: str) -> str | None:
    return shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if os.access(p, os.X_OK)), None)


def require_root_tools(*names: str) -> dict[str, str]:
    """The paths of ``names``, when running as root; otherwise skip (or fail under CI)."""
    found = {}
    for name in names:
        path = tool(name)
        if path is None:
            unavailable(f"the {name!r} tool is not installed (apt-get install nftables "
                        "iproute2)")
        found[name] = str(path)
    if os.geteuid() != 0:
        unavailable("needs root (CAP_NET_ADMIN) to run nft and create network namespaces")
    return found


def nft_check_text(nft: str, text: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([nft, "-c", "-f", "-"], input=text, capture_output=True, text=True,
                          timeout=120, check=False)


def doc(zones: list[dict[str, Any]], rules: list[dict[str, Any]],
        firewall: dict[str, Any] | None = None) -> bytes:
    data: dict[str, Any] = {"version": 1, "zones": zones, "rules": rules}
    if firewall is not None:
        data["firewall"] = firewall
    return yaml.safe_dump(data, sort_keys=False).encode()


def policy(zones: list[dict[str, Any]], rules: list[dict[str, Any]],
           firewall: dict[str, Any] | None = None) -> Policy:
    return parse_policy(doc(zones, rules, firewall))


def problems_of(data: bytes | str) -> NetsegPolicyError:
    raw = data.encode() if isinstance(data, str) else data
    with pytest.raises(NetsegPolicyError) as info:
        parse_policy(raw)
    return info.value


ZONES = [
    {"name": "sensors", "vlan": 20, "subnets": ["10.20.0.0/24", "fd00:20::/64"]},
    {"name": "broker", "vlan": 30, "subnets": ["10.30.0.0/24", "fd00:30::/64"]},
    {"name": "gateways", "vlan": 40, "subnets": ["10.40.0.0/24"]},
    {"name": "admin", "vlan": 99, "subnets": ["10.99.0.0/24"], "admin": True},
]
