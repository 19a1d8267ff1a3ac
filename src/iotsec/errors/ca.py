"""Errors: the CA hierarchy: rotation, retirement, the offline root, imported CAs."""

from __future__ import annotations

from iotsec.errors.base import ConflictError, PkiError

__all__ = ["CaImportError", "CaStateError", "OfflineKeyError"]


class OfflineKeyError(PkiError):
    """The CA's key is kept offline (an offline root): the home cannot sign with it."""

    status = 409
    code = "ca-key-offline"
    default_hint = ("make a request with 'iotsec ca request', sign it offline with "
                    "'iotsec ca sign-intermediate' and install it with 'iotsec ca import'")


class CaStateError(ConflictError):
    """The CA is not in a state that allows the operation (retiring the active issuing
    CA, retiring a CA twice)."""

    code = "ca-state"
    default_hint = "'iotsec ca list' shows the CAs and their states"


class CaImportError(PkiError):
    """A CA certificate (or its key) offered for import was refused: not a CA, not able
    to sign certificates, expired, not issued by the expected root, or not matching its
    key. Nothing was written."""

    code = "ca-import"
    default_hint = "check the certificate with 'openssl x509 -noout -text -in FILE'"
