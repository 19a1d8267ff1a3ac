"""Errors: network segmentation."""

from __future__ import annotations

from iotsec.errors.base import InvalidInputError, IotsecError

__all__ = ["NetsegError", "NetsegPolicyError", "NftError"]


class NetsegError(IotsecError):
    """Network segmentation: a zone policy, a flow or a firewall ruleset that is refused."""

    status = 422
    code = "netseg"


class NetsegPolicyError(NetsegError, InvalidInputError):
    """A zone policy file that is not valid. ``problems`` holds every problem found as
    ``(line, message)`` pairs (line ``None`` when it has none); the message is the first."""

    code = "invalid-netseg-policy"
    default_hint = "run 'iotsec netseg validate FILE' to see every problem with its line"

    def __init__(self, message: str, *, hint: str | None = None,
                 problems: tuple[tuple[int | None, str], ...] = ()) -> None:
        super().__init__(message, hint=hint)
        self.problems = problems or ((None, message),)


class NftError(NetsegError):
    """The nft tool is missing, not permitted, or refused a ruleset."""

    status = 500
    code = "nft"
    default_hint = "install the nftables package and run as root (nft needs CAP_NET_ADMIN)"
