"""Alerts as data: what an alert is, its states, how one alert is told from another
(its fingerprint), and how a webhook delivery is signed and retried.

A webhook receiver checks a delivery with the shared secret: the ``X-Iotsec-Signature``
header is ``sha256=`` and the hex HMAC-SHA256 over ``<X-Iotsec-Timestamp>.<body>``, and the
timestamp (Unix seconds) bounds replays.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any, Final

from iotsec.errors import ConflictError, InvalidInputError
from iotsec.findings.model import Severity

__all__ = [
    "DELIVERY_ATTEMPTS", "AlertState", "NewAlert", "backoff", "fingerprint", "sign_webhook",
    "webhook_body"
]

#: Attempts before a delivery is given up ("dead": kept, with its last error).
DELIVERY_ATTEMPTS: Final = 8
_BACKOFF: Final = (10, 30, 90, 300, 900, 1800, 3600)


class AlertState(enum.StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"

    @classmethod
    def parse(cls, text: str) -> AlertState:
        try:
            return cls(text.strip().lower())
        except ValueError:
            raise InvalidInputError(f"unknown alert state {text[:20]!r}",
                                    hint="use open, acknowledged or resolved") from None

    def check_transition(self, target: AlertState, alert_id: int) -> None:
        if self is AlertState.RESOLVED:
            raise ConflictError(f"alert {alert_id} is resolved already",
                                hint="a resolved alert is final; a new detection opens a new one")
        if self is target:
            raise ConflictError(f"alert {alert_id} is {self.value} already")


@dataclass(frozen=True, slots=True)
class NewAlert:
    """What a detection or a scheduled check raises."""

    rule: str  # e.g. cert.expiring
    severity: Severity
    subject: str  # what it is about: a device, a CA, the fleet
    summary: str
    suggested: str  # the suggested response
    evidence: dict[str, Any]


def fingerprint(rule: str, subject: str) -> str:
    """One alert per rule and subject while it is not resolved: raising it again updates
    that alert (its count, its evidence) instead of opening another."""
    return hashlib.sha256(json.dumps([rule, subject]).encode()).hexdigest()


def backoff(attempts: int) -> int:
    """Seconds before the next delivery attempt after ``attempts`` failed ones."""
    return _BACKOFF[min(max(attempts, 1), len(_BACKOFF)) - 1]


def webhook_body(alert: dict[str, Any]) -> bytes:
    return json.dumps(alert, sort_keys=True, separators=(",", ":"), default=str).encode()


def sign_webhook(secret: bytes, timestamp: int, body: bytes) -> str:
    """The ``X-Iotsec-Signature`` value of ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret, str(timestamp).encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()
