"""The frameworks iotsec reports on, by id."""

from __future__ import annotations

from iotsec.compliance.catalog import Framework
from iotsec.compliance.frameworks.etsi_en_303_645 import ETSI_EN_303_645
from iotsec.compliance.frameworks.nistir_8259a import NISTIR_8259A
from iotsec.compliance.frameworks.owasp_iot import OWASP_IOT_TOP10

__all__ = ["FRAMEWORKS", "framework_ids", "get_framework"]

FRAMEWORKS: dict[str, Framework] = {
    f.id: f for f in (ETSI_EN_303_645, NISTIR_8259A, OWASP_IOT_TOP10)
}


def framework_ids() -> list[str]:
    return list(FRAMEWORKS)


def get_framework(framework_id: str) -> Framework | None:
    """The framework with this id (case-insensitive), or ``None``."""
    return FRAMEWORKS.get(framework_id.strip().lower())
