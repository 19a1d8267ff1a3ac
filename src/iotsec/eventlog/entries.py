"""The entries of the event log's hash chain: how an entry is encoded and hashed, and how
new rows are chained. :mod:`iotsec.eventlog.chain` (verification, checkpoints) re-exports
these; appending an event needs only this module.

An entry is encoded as the compact ASCII JSON array of its fields (``null`` for a missing
one), so that no two different entries encode alike whatever their fields contain; the C
JSON encoder makes that a few microseconds.
"""

from __future__ import annotations

import json
import json.encoder
from collections.abc import Iterable
from typing import Any

__all__ = ["GENESIS", "encode_entry", "encode_fields", "entry_hash", "link_rows"]

#: The "previous hash" of the first entry.
GENESIS = "0" * 64

_json = json.JSONEncoder(ensure_ascii=True, separators=(",", ":")).encode
# The C encoder that the json module builds anew on every call, built once: the chain
# hashes every event, and this halves the cost. Same output as _json.
_make_encoder = getattr(json.encoder, "c_make_encoder", None)
_chunks = None if _make_encoder is None else _make_encoder(
    None, None, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, True)


def encode_fields(fields: tuple[Any, ...]) -> str:
    """``fields`` as compact ASCII JSON (an entry's fields: what its hash covers)."""
    if _chunks is None:  # pragma: no cover - CPython has the C encoder
        return _json(fields)
    return "".join(_chunks(fields, 0))


def encode_entry(seq: int, at: int, kind: str, outcome: str, actor: str | None,
                 source: str | None, subject: str | None, detail: str) -> bytes:
    """The bytes an entry's hash covers (after the previous hash)."""
    return encode_fields((seq, at, kind, outcome, actor, source, subject, detail)).encode("ascii")


def entry_hash(previous: str, seq: int, at: int, kind: str, outcome: str, actor: str | None,
               source: str | None, subject: str | None, detail: str) -> str:
    """SHA-256 (hex) over the previous entry's hash and this entry."""
    # cryptography's digest rather than hashlib's: appending is on the path of ``iotsec data
    # encrypt``, whose start-up would otherwise load a second OpenSSL binding for one hash.
    # Imported here, not with the module: the read commands import this one and hash nothing.
    # (Verification, which hashes every entry, uses hashlib: :mod:`iotsec.eventlog.chain`.)
    from cryptography.hazmat.primitives.hashes import SHA256, Hash

    digest = Hash(SHA256())
    digest.update((previous + encode_fields(
        (seq, at, kind, outcome, actor, source, subject, detail))).encode("ascii"))
    return digest.finalize().hex()


def link_rows(rows: Iterable[dict[str, Any]], seq: int, previous: str) -> None:
    """Chain ``rows`` (event rows with ``at``, ``kind``, ``outcome``, ``actor``, ``source``,
    ``subject`` and ``detail``) after the entry at position ``seq`` whose hash is
    ``previous``: each gets its ``seq`` and ``hash``, in order."""
    for row in rows:
        seq += 1
        previous = entry_hash(previous, seq, row["at"], row["kind"], row["outcome"],
                              row["actor"], row["source"], row["subject"], row["detail"])
        row["seq"], row["hash"] = seq, previous
