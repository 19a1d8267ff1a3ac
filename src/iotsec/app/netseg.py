"""Network segmentation use cases: validate a zone policy, check a flow, compile the
firewall ruleset, and have ``nft`` itself check (or load) a ruleset.

The pure work happens in ``iotsec.netseg``; this module adds the I/O: running the ``nft``
tool (never through a shell, input on stdin, a time limit, its error text kept short).
"""

from __future__ import annotations

import enum
import os
import shutil
import subprocess
from dataclasses import dataclass, field

from iotsec.errors import NetsegPolicyError, NftError
from iotsec.findings.model import Finding, Severity
from iotsec.netseg.decide import Decider, Decision, Flow
from iotsec.netseg.findings import review
from iotsec.netseg.model import Policy, Zone
from iotsec.netseg.nftables import compile_nftables
from iotsec.netseg.policy import parse_policy

__all__ = [
    "NFT_TIMEOUT_S", "CheckResult", "Format", "ValidationReport", "check", "compile_policy",
    "nft_binary", "nft_check", "nft_load", "validate"
]

NFT_TIMEOUT_S = 120.0


class Format(enum.StrEnum):
    NFTABLES = "nftables"


@dataclass(frozen=True)
class ValidationReport:
    """The outcome of ``validate``: either ``policy`` with its findings, or the problems
    (``(line, message)``) that make the file invalid."""

    policy: Policy | None
    problems: tuple[tuple[int | None, str], ...] = ()
    findings: list[Finding] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return self.policy is not None

    @property
    def failing(self) -> bool:
        """Invalid, or a high or medium finding (what makes ``validate`` exit 1)."""
        return not self.valid or any(f.severity in (Severity.HIGH, Severity.MEDIUM)
                                     for f in self.findings)


def validate(data: bytes) -> ValidationReport:
    """Every problem (with its line) of a policy file, or its findings when it is valid.

    An oversized file still raises ``InputTooLargeError``: nothing of it is parsed.
    """
    try:
        policy = parse_policy(data)
    except NetsegPolicyError as exc:
        return ValidationReport(None, exc.problems)
    return ValidationReport(policy, (), review(policy))


@dataclass(frozen=True)
class CheckResult:
    flow: Flow
    decision: Decision
    from_zone: Zone | None
    to_zone: Zone | None


def check(data: bytes, flow: Flow) -> CheckResult:
    """The decision the compiled firewall makes for the first packet of ``flow``."""
    decider = Decider(parse_policy(data))
    return CheckResult(flow, decider.decide(flow), decider.zone_of(flow.src),
                       decider.zone_of(flow.dst))


def compile_policy(data: bytes, fmt: Format = Format.NFTABLES) -> str:
    """The firewall ruleset for a policy file."""
    policy = parse_policy(data)
    if fmt is Format.NFTABLES:
        return compile_nftables(policy)
    raise NftError(f"unknown format {fmt}", hint="use --format nftables")  # pragma: no cover


def nft_binary() -> str:
    """The path of ``nft``; raises ``NftError`` when it is not installed."""
    found = shutil.which("nft") or next(
        (p for p in ("/usr/sbin/nft", "/sbin/nft") if os.access(p, os.X_OK)), None)
    if found is None:
        raise NftError("the nft tool is not installed", hint="install the nftables package")
    return found


def _run_nft(args: list[str], ruleset: str, *, netns: str | None = None) -> None:
    cmd = [nft_binary(), *args, "-f", "-"]
    if netns is not None:
        ip = shutil.which("ip") or "/usr/sbin/ip"
        cmd = [ip, "netns", "exec", netns, *cmd]
    try:
        proc = subprocess.run(cmd, input=ruleset.encode("utf-8"), capture_output=True,
                              timeout=NFT_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise NftError(f"nft did not finish within {NFT_TIMEOUT_S:.0f} s") from None
    except OSError as exc:
        raise NftError(f"cannot run nft: {exc.strerror}") from None
    if proc.returncode != 0:
        text = proc.stderr.decode("utf-8", "replace").strip()
        if "Operation not permitted" in text:
            raise NftError("nft needs CAP_NET_ADMIN (run as root)",
                           hint="run the command as root")
        lines = [line for line in text.splitlines() if line.strip()][:6]
        raise NftError("nft refused the ruleset: " + " | ".join(lines)[:800],
                       hint="this is a bug in the compiler if the ruleset came from iotsec")


def nft_check(ruleset: str) -> None:
    """Have ``nft -c -f`` check ``ruleset`` without applying it; raises ``NftError``."""
    _run_nft(["-c"], ruleset)


def nft_load(ruleset: str, *, netns: str | None = None) -> None:
    """Load ``ruleset`` with ``nft -f`` (replacing its table atomically), optionally inside
    the network namespace ``netns``; raises ``NftError``."""
    _run_nft([], ruleset, netns=netns)
