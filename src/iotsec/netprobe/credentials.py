"""Default-credential attempts over the network (telnet, FTP, HTTP Basic, MQTT), paced and
bounded by a :class:`~iotsec.scan.credentials.CredentialConfig`."""

from __future__ import annotations

import asyncio
import base64
import re
import secrets
from collections.abc import Callable

from iotsec.netprobe.net import Conversation, open_conversation
from iotsec.netprobe.tls import permissive_context
from iotsec.scan import probes
from iotsec.scan.credentials import (
    Attempt,
    Credential,
    CredentialConfig,
    CredentialOutcome,
    Outcome,
)

__all__ = [
    "attempt_for", "check_credentials", "ftp_attempt", "http_basic_attempt", "mqtt_attempt",
    "telnet_attempt"
]



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
