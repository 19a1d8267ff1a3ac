"""Opening the runtime for a command."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from iotsec.app.runtime import Runtime, open_runtime
from iotsec.config import Settings

__all__ = ["runtime"]


@contextmanager
def runtime() -> Iterator[Runtime]:
    rt = open_runtime(Settings())
    try:
        yield rt
    finally:
        rt.close()
