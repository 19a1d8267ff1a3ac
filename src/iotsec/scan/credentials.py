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

import asyncio
import base64
import enum
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import cache
from importlib import resources

from iotsec.scan import probes
from iotsec.scan.net import Conversation, open_conversation
from iotsec.scan.tls import permissive_context

__all__ = ["Credential", "CredentialConfig", "CredentialOutcome", "Outcome",
           "check_credentials", "default_credentials", "parse_credentials"]

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


def _random_credential(username: str | None = None) -> Credential:
    return Credential(username or f"iotsec-{secrets.token_hex(4)}", secrets.token_urlsafe(18))


async def check_credentials(attempt: Attempt, config: CredentialConfig) -> CredentialOutcome:
    """Run the control attempt, then the list, with ``attempt`` (one login per call)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + config.budget
    interval = 1.0 / config.rate
    last = 0.0
    count = 0

    async def paced(cred: Credential) -> Outcome:
        nonlocal last, count
        wait = last + interval - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        last = loop.time()
        count += 1
        try:
            return await asyncio.wait_for(attempt(cred), config.timeout)
        except (TimeoutError, OSError):
            return Outcome.UNKNOWN

    control = await paced(_random_credential())
    if control is Outcome.ACCEPTED:
        return CredentialOutcome("accepts-any", attempts=count)
    if control is Outcome.UNKNOWN:
        return CredentialOutcome("inconclusive", attempts=count,
                                 notes=["the control attempt's answer could not be read"])
    unknown_run = 0
    for cred in config.pairs:
        if loop.time() + interval > deadline:
            return CredentialOutcome("inconclusive", attempts=count, notes=[
                f"the {config.budget:g} s budget ran out after {count} attempts"])
        result = await paced(cred)
        if result is Outcome.ACCEPTED:
            confirm = await paced(_random_credential(cred.username))
            if confirm is Outcome.ACCEPTED:
                return CredentialOutcome("any-password", credential=cred, attempts=count)
            return CredentialOutcome("default", credential=cred, attempts=count)
        unknown_run = unknown_run + 1 if result is Outcome.UNKNOWN else 0
        if unknown_run >= 3:
            return CredentialOutcome("inconclusive", attempts=count, notes=[
                "three answers in a row could not be read; stopped"])
    return CredentialOutcome("none", attempts=count)


# --------------------------------------------------------------------------- protocols

_FAILED = re.compile(rb"incorrect|invalid|fail|denied|wrong|bad password|not allowed|error",
                     re.IGNORECASE)
_LOGIN = re.compile(rb"(login|username|user name|user)\s*:\s*$", re.IGNORECASE)
_PASSWORD = re.compile(rb"password\s*:\s*$", re.IGNORECASE)
_SHELL = re.compile(rb"(^|\n)[^\n]{0,80}[#$>%]\s*$")
_WELCOME = re.compile(rb"welcome|last login|busybox|built-in shell", re.IGNORECASE)


def _grew(size: int) -> Callable[[bytes], bool]:
    return lambda data: len(data) > size


class _Telnet:
    """A Telnet client that refuses every option and reads text up to a prompt."""

    def __init__(self, conv: Conversation) -> None:
        self.conv = conv
        self.text = bytearray()
        self.seen = 0

    async def read_until(self, pattern: Callable[[bytes], bool], timeout: float) -> bytes:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            text, replies, _n = probes.telnet_negotiate(bytes(self.conv.received[self.seen:]))
            if replies:
                self.seen = len(self.conv.received)
                self.text += text
                await self.conv.send(replies, timeout)
            elif text:
                self.seen = len(self.conv.received)
                self.text += text
            if pattern(bytes(self.text)):
                return bytes(self.text)
            left = deadline - loop.time()
            if left <= 0 or self.conv.overflowed or self.conv.reader.at_eof():
                return bytes(self.text)
            if not await self.conv.read(left, until=_grew(len(self.conv.received))):
                return bytes(self.text)

    async def send_line(self, line: str, timeout: float) -> None:
        self.text.clear()
        await self.conv.send(line.encode("utf-8") + b"\r\n", timeout)


def _tail(data: bytes) -> bytes:
    return data.rstrip()[-200:]


async def telnet_attempt(host: str, port: int, cred: Credential, timeout: float) -> Outcome:
    conv = await open_conversation(host, port, timeout)
    try:
        client = _Telnet(conv)

        def prompt(d: bytes) -> bool:
            return bool(_LOGIN.search(_tail(d)) or _PASSWORD.search(_tail(d)))

        text = await client.read_until(prompt, timeout)
        if _LOGIN.search(_tail(text)):
            await client.send_line(cred.username, timeout)
            text = await client.read_until(lambda d: bool(_PASSWORD.search(_tail(d))
                                                          or _SHELL.search(_tail(d))), timeout)
            if not _PASSWORD.search(_tail(text)):
                # No password asked: a shell straight after the user name is a login.
                return Outcome.ACCEPTED if _SHELL.search(_tail(text)) else Outcome.UNKNOWN
        elif not _PASSWORD.search(_tail(text)):
            return Outcome.UNKNOWN
        await client.send_line(cred.password, timeout)

        def decided(d: bytes) -> bool:
            t = _tail(d)
            return bool(_FAILED.search(d) or _LOGIN.search(t) or _PASSWORD.search(t)
                        or _SHELL.search(t))

        text = await client.read_until(decided, timeout)
        tail = _tail(text)
        if _FAILED.search(text) or _LOGIN.search(tail) or _PASSWORD.search(tail):
            return Outcome.REJECTED
        if _SHELL.search(tail) or _WELCOME.search(text):
            return Outcome.ACCEPTED
        return Outcome.UNKNOWN
    finally:
        await conv.close()


async def _ftp_reply(conv: Conversation, timeout: float) -> int | None:
    """The code of the next complete FTP reply (multi-line replies included)."""
    start = len(conv.received)

    def complete(d: bytes) -> bool:
        lines = d[start:].split(b"\r\n")
        return any(re.match(rb"^\d{3} ", line) for line in lines[:-1])

    await conv.read(timeout, until=complete)
    for line in bytes(conv.received[start:]).split(b"\r\n"):
        m = re.match(rb"^(\d{3}) ", line)
        if m:
            return int(m.group(1))
    return None


async def ftp_attempt(host: str, port: int, cred: Credential, timeout: float) -> Outcome:
    conv = await open_conversation(host, port, timeout)
    try:
        if await _ftp_reply(conv, timeout) != 220:
            return Outcome.UNKNOWN
        await conv.send(f"USER {cred.username}\r\n".encode(), timeout)
        code = await _ftp_reply(conv, timeout)
        if code == 230:
            return Outcome.ACCEPTED
        if code in (530, 430):
            return Outcome.REJECTED
        if code != 331:
            return Outcome.UNKNOWN
        await conv.send(f"PASS {cred.password}\r\n".encode(), timeout)
        code = await _ftp_reply(conv, timeout)
        if code in (230, 202):
            return Outcome.ACCEPTED
        if code is not None and code // 100 in (4, 5):
            return Outcome.REJECTED
        return Outcome.UNKNOWN
    finally:
        conv.writer.write(b"QUIT\r\n")
        await conv.close()


async def http_basic_attempt(host: str, port: int, cred: Credential, timeout: float, *,
                             path: str = "/", tls: bool = False,
                             server_name: str | None = None) -> Outcome:
    conv = await open_conversation(host, port, timeout,
                                   tls=permissive_context() if tls else None,
                                   server_hostname=server_name)
    try:
        token = base64.b64encode(f"{cred.username}:{cred.password}".encode()).decode()
        shown = server_name or (f"[{host}]" if ":" in host else host)
        await conv.send(probes.http_request(f"{shown}:{port}", path,
                                            authorization=f"Basic {token}"), timeout)
        await conv.read(timeout, until=lambda d: b"\r\n\r\n" in d)
        response = probes.parse_http_response(bytes(conv.received))
        if response is None:
            return Outcome.UNKNOWN
        if response.status in (401, 403, 407):
            return Outcome.REJECTED
        if 200 <= response.status < 400:
            return Outcome.ACCEPTED
        return Outcome.UNKNOWN
    finally:
        await conv.close()


async def mqtt_attempt(host: str, port: int, cred: Credential, timeout: float, *,
                       tls: bool = False, server_name: str | None = None) -> Outcome:
    conv = await open_conversation(host, port, timeout,
                                   tls=permissive_context() if tls else None,
                                   server_hostname=server_name)
    try:
        await conv.send(probes.mqtt_connect(f"iotsec-scan-{secrets.token_hex(4)}",
                                            username=cred.username, password=cred.password),
                        timeout)
        await conv.read(timeout, until=lambda d: probes.parse_connack(d) is not None)
        rc = probes.parse_connack(bytes(conv.received))
        if rc == 0:
            conv.writer.write(probes.MQTT_DISCONNECT)
            return Outcome.ACCEPTED
        if rc in (4, 5, 0x86, 0x87):
            return Outcome.REJECTED
        if rc is None and conv.reader.at_eof():
            # Brokers that drop a refused client without a CONNACK (some do).
            return Outcome.REJECTED
        return Outcome.UNKNOWN
    finally:
        await conv.close()


def attempt_for(protocol: str, host: str, port: int, *, tls: bool = False,
                server_name: str | None = None, path: str = "/",
                timeout: float = 3.0) -> Attempt | None:
    """The login attempt for a service, or ``None`` when iotsec has none for it."""
    if protocol == "telnet" and not tls:
        return lambda c: telnet_attempt(host, port, c, timeout)
    if protocol == "ftp" and not tls:
        return lambda c: ftp_attempt(host, port, c, timeout)
    if protocol == "http":
        return lambda c: http_basic_attempt(host, port, c, timeout, path=path, tls=tls,
                                            server_name=server_name)
    if protocol == "mqtt":
        return lambda c: mqtt_attempt(host, port, c, timeout, tls=tls,
                                      server_name=server_name)
    return None

