"""Default and weak credential checks for Telnet, FTP, HTTP basic authentication and MQTT.

The list ships with iotsec (``data/default-credentials.txt``). For each service:

1. a *control attempt* with a random user name and a random password goes first: a
   service that accepts it accepts anything, and is reported as such (never as a
   default-password hit);
2. then the list, in order, at most ``rate`` attempts per second, one at a time, within a
   time budget; the first accepted pair stops the check;
3. a hit is confirmed with the same user name and a random password: a service that
   accepts that does not check this user's password at all, which is reported instead.

An attempt whose outcome cannot be read (no recognisable prompt, an unexpected reply) is
*unknown*, never a hit; when the control attempt is unknown, the list is not tried.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import cache
from importlib import resources

__all__ = [
    "Credential", "CredentialConfig", "CredentialOutcome", "Outcome", "default_credentials",
    "parse_credentials"
]

MAX_LIST_BYTES = 256 * 1024
MAX_LIST_ENTRIES = 5000


@dataclass(frozen=True, slots=True)
class Credential:
    username: str
    password: str

    def __repr__(self) -> str:  # passwords stay out of logs and tracebacks
        return f"Credential(username={self.username!r}, password=***)"


def parse_credentials(data: bytes) -> tuple[Credential, ...]:
    """``user:password`` lines (``#`` comments; ``user:`` for an empty password)."""
    if len(data) > MAX_LIST_BYTES:
        raise ValueError(f"a credential list is at most {MAX_LIST_BYTES} bytes")
    out: list[Credential] = []
    seen: set[tuple[str, str]] = set()
    for line in data.decode("utf-8").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        user, sep, password = line.strip().partition(":")
        if not sep or not user:
            raise ValueError(f"credential line {line!r} is not user:password")
        if (user, password) not in seen:
            seen.add((user, password))
            out.append(Credential(user, password))
        if len(out) > MAX_LIST_ENTRIES:
            raise ValueError(f"a credential list has at most {MAX_LIST_ENTRIES} entries")
    return tuple(out)


@cache
def default_credentials() -> tuple[Credential, ...]:
    """The built-in list (Mirai's, router and camera defaults, broker defaults)."""
    data = resources.files("iotsec.scan").joinpath("data/default-credentials.txt").read_bytes()
    return parse_credentials(data)


@dataclass(frozen=True, slots=True)
class CredentialConfig:
    """``rate``: attempts per second per service; ``timeout``: seconds per attempt;
    ``budget``: seconds per service for the whole check."""

    enabled: bool = True
    rate: float = 5.0
    timeout: float = 3.0
    budget: float = 60.0
    credentials: tuple[Credential, ...] | None = None

    def __post_init__(self) -> None:
        if not 0.1 <= self.rate <= 1000:
            raise ValueError("the credential attempt rate must be between 0.1 and 1000 per s")
        if not 0.1 <= self.timeout <= 60:
            raise ValueError("the credential attempt timeout must be 0.1 to 60 seconds")
        if not 1 <= self.budget <= 3600:
            raise ValueError("the credential check budget must be 1 to 3600 seconds")

    @property
    def pairs(self) -> tuple[Credential, ...]:
        return self.credentials if self.credentials is not None else default_credentials()


class Outcome(enum.Enum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    UNKNOWN = "unknown"


@dataclass
class CredentialOutcome:
    """``verdict``: ``accepts-any`` (the control attempt got in), ``any-password`` (a user
    name with a random password got in), ``default`` (a listed pair got in), ``none``
    (every attempt was refused), ``inconclusive`` (the answers could not be read, or the
    budget ran out first)."""

    verdict: str
    credential: Credential | None = None
    attempts: int = 0
    notes: list[str] = field(default_factory=list)


Attempt = Callable[[Credential], Awaitable[Outcome]]


# --------------------------------------------------------------------------- protocols


