"""Errors: security scanning."""

from __future__ import annotations

from iotsec.errors.base import InvalidInputError, IotsecError

__all__ = ["ScanError", "ScanResolveError", "ScanScopeError", "ScanTargetError", "ScanToolError"]


class ScanError(IotsecError):
    """A scan that could not run as asked (the CLI exits 2 for these: nothing was judged)."""

    status = 422
    code = "scan"


class ScanTargetError(ScanError, InvalidInputError):
    """A target, CIDR range, port list or scope file that cannot be parsed or is too large."""

    code = "scan-target"
    default_hint = ("give addresses (192.0.2.10), CIDR ranges (192.0.2.0/24), host names, "
                    "and ports as 1-65535 lists such as 22,80,8000-8100,U:5683")


class ScanScopeError(ScanError):
    """A target outside the authorised scope, or a very large range without confirmation."""

    status = 403
    code = "scan-scope"
    default_hint = "add the range to the scope file (--scope) if you are authorised to scan it"


class ScanResolveError(ScanError):
    """A host name that does not resolve (or not within the time allowed)."""

    code = "scan-resolve"
    default_hint = "check the name, or give the address instead"


class ScanToolError(ScanError):
    """An optional external tool (nmap) that is missing, failed or gave unreadable output."""

    status = 500
    code = "scan-tool"
    default_hint = "install nmap (Debian package 'nmap') or leave out --with-nmap"
