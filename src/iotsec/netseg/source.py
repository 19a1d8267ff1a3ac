"""Reading a zone policy file: safe YAML with line numbers and stated limits.

The same rules as the access policy documents (``iotsec.access.document``): the size is
checked before anything is parsed, only the safe subset of YAML is accepted, anchors and
aliases are refused (no expansion bombs), duplicate keys are errors, and every value keeps
the line it came from. Explicit tags (``!!python/...`` or any other) are refused, and
nesting is capped so a deeply nested file cannot exhaust the stack.

The document is built straight from the parser's event stream (the C parser when PyYAML
has it), with scalars resolved and constructed by PyYAML's safe resolver and constructor.
That is one pass instead of the three (events, node tree, construction) of the generic
route, which matters for a large site's policy running to megabytes; the node tree would
only have been used for its line marks, which the events carry as well.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

from iotsec.errors import InputTooLargeError, NetsegPolicyError

__all__ = ["MAX_DEPTH", "MAX_POLICY_BYTES", "LineTree", "Source", "load_yaml"]

#: The largest policy file read (a site with thousands of zones and rules fits easily).
MAX_POLICY_BYTES = 4 * 1024 * 1024
#: The deepest nesting of mappings and lists accepted (the policy shape needs 4).
MAX_DEPTH = 16

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_STR = "tag:yaml.org,2002:str"
_NO_KEY = object()
# A plain scalar can only resolve to something other than a string (int, bool, null...)
# if it starts with one of these characters; the rest skip the resolver's regexes.
_IMPLICIT_FIRST = frozenset(Resolver.yaml_implicit_resolvers) | {""}

#: Lines of a value's parts: a dict (key -> (line, parts)) for a mapping, a list of
#: (line, parts) for a sequence, None for a scalar.
LineTree = dict[Any, tuple[int, Any]] | list[tuple[int, Any]] | None


@dataclass(frozen=True, slots=True)
class Source:
    """A parsed YAML document and the line of each of its values."""

    data: Any
    lines: LineTree
    root_line: int = 1

    def line(self, path: Sequence[int | str]) -> int | None:
        """The 1-based line of the value at ``path`` (or of the deepest part that exists)."""
        line: int | None = self.root_line if self.data is not None else None
        tree = self.lines
        for part in path:
            inside = (part in tree) if isinstance(tree, dict) else (
                isinstance(tree, list) and isinstance(part, int) and 0 <= part < len(tree))
            if not inside:
                break
            line, tree = tree[part]  # type: ignore[index]
        return line

    def item_lines(self, key: str) -> list[int]:
        """The line of each item of the top-level list ``key`` (empty when there is none)."""
        tree = self.lines
        if isinstance(tree, dict) and key in tree and isinstance(tree[key][1], list):
            return [line for line, _ in tree[key][1]]
        return []


class _Refused(Exception):
    def __init__(self, line: int | None, message: str, hint: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message
        self.hint = hint


def _refuse(line: int | None, message: str, hint: str) -> NetsegPolicyError:
    where = f"line {line}: " if line is not None else ""
    return NetsegPolicyError(f"{where}{message}", hint=hint, problems=((line, message),))


class _Builder:
    def __init__(self) -> None:
        self.resolver = Resolver()
        self.constructor = SafeConstructor()
        # Each open collection: [container, lines, line, pending key, key line].
        self.stack: list[list[Any]] = []
        self.root: Any = None
        self.root_lines: LineTree = None
        self.root_line = 1
        self.documents = 0

    def scalar(self, event: Any) -> Any:
        value = event.value
        if event.implicit[0] and value[:1] in _IMPLICIT_FIRST:
            tag = self.resolver.resolve(  # type: ignore[no-untyped-call]
                yaml.ScalarNode, value, (True, False))
        else:
            tag = _STR
        if tag == _STR:
            return value
        return self.constructor.construct_object(yaml.ScalarNode(tag, value))

    def add(self, value: Any, lines: LineTree, line: int, is_scalar: bool) -> None:
        if not self.stack:
            self.root, self.root_lines, self.root_line = value, lines, line
            return
        top = self.stack[-1]
        container = top[0]
        if isinstance(container, list):
            container.append(value)
            top[1].append((line, lines))
        elif top[3] is _NO_KEY:
            if not is_scalar:
                raise _Refused(line, "mapping keys must be plain values",
                               "write keys as plain words")
            if value in container:
                raise _Refused(line, f"duplicate key {value!r}",
                               "each key may appear once in a mapping")
            top[3], top[4] = value, line
        else:
            container[top[3]] = value
            top[1][top[3]] = (line, lines)
            top[3] = _NO_KEY

    def build(self, text: str) -> Source:
        event: Any
        for event in yaml.parse(text, Loader=_Loader):
            kind = type(event)
            line = event.start_mark.line + 1 if event.start_mark is not None else 0
            if kind is yaml.AliasEvent or getattr(event, "anchor", None):
                raise _Refused(line, "YAML anchors and aliases are not allowed",
                               "write each zone and rule out in full")
            tag = getattr(event, "tag", None)
            if tag is not None and tag != "!":
                raise _Refused(line, f"YAML tags are not allowed ({tag})",
                               "remove the '!' tag; write plain values")
            if kind is yaml.ScalarEvent:
                try:
                    value = self.scalar(event)
                except (ValueError, OverflowError, yaml.YAMLError):
                    # The safe constructor refuses some scalars it recognised, such as
                    # a date like 2024-13-45.
                    raise _Refused(line, f"not a valid value: {event.value[:40]!r}",
                                   "quote values that are meant as text") from None
                self.add(value, None, line, True)
            elif kind is yaml.MappingStartEvent or kind is yaml.SequenceStartEvent:
                if len(self.stack) >= MAX_DEPTH:
                    raise _Refused(line, f"nested deeper than {MAX_DEPTH} levels",
                                   "a zone policy is a mapping of lists of mappings")
                if kind is yaml.MappingStartEvent:
                    self.stack.append([{}, {}, line, _NO_KEY, 0])
                else:
                    self.stack.append([[], [], line, _NO_KEY, 0])
            elif kind is yaml.MappingEndEvent or kind is yaml.SequenceEndEvent:
                container, lines, start, _, _ = self.stack.pop()
                self.add(container, lines, start, False)
            elif kind is yaml.DocumentStartEvent:
                self.documents += 1
                if self.documents > 1:
                    raise _Refused(line, "only one YAML document is allowed",
                                   "remove the second '---'")
        return Source(self.root, self.root_lines, self.root_line)


def load_yaml(data: bytes, *, limit: int = MAX_POLICY_BYTES) -> Source:
    """Parse ``data`` (at most ``limit`` bytes of UTF-8 YAML or JSON) safely.

    Raises ``InputTooLargeError`` before parsing when it is too large, and
    ``NetsegPolicyError`` (with the line) when it is not acceptable YAML.
    """
    if len(data) > limit:
        raise InputTooLargeError(
            f"the policy file is {len(data)} bytes; the limit is {limit} (nothing was parsed)",
            hint="split the site into several policy files")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise _refuse(line, "the policy file is not UTF-8 text", "save it as UTF-8") from None
    try:
        return _Builder().build(text)
    except _Refused as exc:
        raise _refuse(exc.line, exc.message, exc.hint) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise _refuse(mark.line + 1 if mark is not None else None,
                      f"not valid YAML: {exc.problem or exc.context}",
                      "check indentation, quotes and brackets") from None
    except yaml.YAMLError as exc:
        raise _refuse(None, f"not valid YAML: {type(exc).__name__}",
                      "check indentation, quotes and brackets") from None
