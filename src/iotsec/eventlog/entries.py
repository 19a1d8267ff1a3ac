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
import sys
from collections.abc import Callable, Iterable
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


def _sha256_hex() -> Callable[[bytes], str]:
    """SHA-256 (hex): hashlib's when the process has loaded it (twice as fast per call, and
    loaded by the server and by most commands), else cryptography's. ``iotsec data
    encrypt`` loads cryptography and not hashlib, whose own OpenSSL binding would cost it
    more to load than its one or two appends could save. Both give the same digest."""
    hashlib = sys.modules.get("hashlib")
    if hashlib is not None:
        sha256 = hashlib.sha256
        return lambda data: sha256(data).hexdigest()
    from cryptography.hazmat.primitives.hashes import SHA256, Hash

    def digest(data: bytes) -> str:
        hasher = Hash(SHA256())
        hasher.update(data)
        return hasher.finalize().hex()
    return digest


def entry_hash(previous: str, seq: int, at: int, kind: str, outcome: str, actor: str | None,
               source: str | None, subject: str | None, detail: str) -> str:
    """SHA-256 (hex) over the previous entry's hash and this entry."""
    return _sha256_hex()((previous + encode_fields(
        (seq, at, kind, outcome, actor, source, subject, detail))).encode("ascii"))


def link_rows(rows: Iterable[dict[str, Any]], seq: int, previous: str) -> None:
    """Chain ``rows`` (event rows with ``at``, ``kind``, ``outcome``, ``actor``, ``source``,
    ``subject`` and ``detail``) after the entry at position ``seq`` whose hash is
    ``previous``: each gets its ``seq`` and ``hash``, in order."""
    digest = _sha256_hex()
    for row in rows:
        seq += 1
        previous = digest((previous + encode_fields(
            (seq, row["at"], row["kind"], row["outcome"], row["actor"], row["source"],
             row["subject"], row["detail"]))).encode("ascii"))
        row["seq"], row["hash"] = seq, previous
