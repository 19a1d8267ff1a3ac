"""Documents written by people as YAML (the access policy, detection rules): loaded with the
safe loader, bounded in depth, without anchors, aliases or duplicate keys, and with the
line of any place in them, so that every refusal names its line.

Pure: text in, data and the node tree out; the caller's error class carries the refusal.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import yaml
from pydantic import ValidationError

from iotsec.errors import IotsecError

__all__ = ["line_of", "load"]

# The C loader when PyYAML has it (fast on hostile input), else the pure-Python one; both
# are the safe loaders.
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def line_of(node: yaml.Node | None, loc: Sequence[int | str]) -> int | None:
    """Follow a location (keys and indexes, as pydantic reports them) through the node tree
    to the line it starts on (1-based), as deep as the tree goes."""
    best = node
    for part in loc:
        if isinstance(best, yaml.MappingNode):
            nxt = next((v for k, v in best.value if getattr(k, "value", None) == part), None)
            if nxt is None:
                break
            best = nxt
        elif isinstance(best, yaml.SequenceNode) and isinstance(part, int) \
                and part < len(best.value):
            best = best.value[part]
        else:
            break
    return best.start_mark.line + 1 if best is not None else None


def text_of(data: bytes, *, error: type[IotsecError], what: str) -> str:
    """The document as text, or ``error`` naming the line of the first byte that is not
    UTF-8 (``what``: "the rule file", "the policy file")."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise error(f"line {line}: {what} is not UTF-8 text", hint="save it as UTF-8") from None


def invalid(exc: ValidationError, node: yaml.Node | None, *, error: type[IotsecError],
            hint: str | None = None) -> IotsecError:
    """``error`` for the first problem a model's validation found, at its line."""
    first = exc.errors()[0]
    loc = first.get("loc", ())
    where = ".".join(str(p) for p in loc) or "document"
    return error(f"line {line_of(node, loc) or '?'}: {where}: {first.get('msg', 'invalid')}",
                 hint=hint)


def _check_duplicates(node: yaml.Node, error: type[IotsecError]) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for key, value in node.value:
            if key.value in seen:
                raise error(f"line {key.start_mark.line + 1}: duplicate key {key.value!r}",
                            hint="each key may appear once in a mapping")
            seen.add(key.value)
            _check_duplicates(value, error)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _check_duplicates(item, error)


def load(text: str, *, error: type[IotsecError], max_depth: int, write_out: str,
         depth_hint: str | None = None, what: str = "YAML",
         fallback: Callable[[str], Any] | None = None) -> tuple[Any, yaml.Node | None]:
    """The data of ``text`` and its node tree, or ``error`` naming the line. ``write_out`` is
    the hint for anchors and aliases (e.g. "write each rule out in full"); ``fallback``
    parses a document that YAML refuses but that starts like JSON (then no node tree)."""
    try:
        depth = 0
        for event in yaml.parse(text, Loader=_LOADER):
            line = event.start_mark.line + 1 if event.start_mark else "?"
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise error(f"line {line}: YAML anchors and aliases are not allowed",
                            hint=write_out)
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > max_depth:
                    raise error(f"line {line}: the document is nested more than "
                                f"{max_depth} levels deep", hint=depth_hint)
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
        node = yaml.compose(text, Loader=_LOADER)
        data = yaml.load(text, Loader=_LOADER)  # noqa: S506 - a safe loader
    except yaml.MarkedYAMLError as exc:
        if fallback is not None and text.lstrip()[:1] in ("{", "["):
            return fallback(text), None
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else "?"
        raise error(f"line {line}: not valid {what}: {exc.problem}",
                    hint="check indentation, quotes and brackets") from None
    except yaml.reader.ReaderError as exc:
        line = text[:exc.position].count("\n") + 1
        raise error(f"line {line}: the document contains a control character that YAML "
                    "does not allow") from None
    except yaml.YAMLError as exc:
        raise error(f"not valid {what}: {type(exc).__name__}") from None
    except RecursionError:
        raise error("the document is nested too deeply") from None
    if node is not None:
        _check_duplicates(node, error)
    return data, node
