"""docs/architecture.md's Layout names only what exists, and every module it should name.

The Layout block is a map of the tree: ``src/iotsec/`` and, under it, one entry per
package or module (``pki/  keys.py (...), x509.py``), continued on deeper-indented lines.
Every ``name.py`` and ``name/`` an entry mentions is looked up under the entry's own
directory, and a ``name/ (a, b, c*)`` list names modules of that package; a name that
does not resolve fails, so the map cannot list files that were moved or never written.
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.docs.shellblocks import REPO, blocks

ARCHITECTURE = REPO / "docs" / "architecture.md"
PACKAGE = REPO / "src" / "iotsec"
_HEAD = re.compile(r"^(?P<indent> *)(?P<head>\S.*?)(?: {2,}(?P<rest>.*))?$")
_MODULE = re.compile(r"(?<![\w./])((?:[a-z_][a-z0-9_]*/)*[a-z_][a-z0-9_*]*\.(?:py|md))\b")
_PACKAGE = re.compile(r"(?<![\w./])((?:[a-z_][a-z0-9_]*/)+)(?![\w])")
_MEMBERS = re.compile(r"(?<![\w./])((?:[a-z_][a-z0-9_]*/)+) *\(([^)]*)\)")
_MEMBER = re.compile(r"^[a-z_][a-z0-9_]*\*?$")


def layout_entries() -> list[tuple[Path, str]]:
    """(directory the entry's names resolve in, the entry's whole text) for each entry of
    the Layout block, in order."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    start = text.index("\n## Layout\n")
    block = next(b for b in blocks(ARCHITECTURE)
                 if b.line > text[:start].count("\n") + 1)
    entries: list[tuple[Path, str]] = []
    base = REPO
    for line in block.code.splitlines():
        match = _HEAD.match(line)
        if match is None or match.group("head").startswith("--"):
            continue
        indent, head = len(match.group("indent")), match.group("head")
        if indent == 0:
            base = REPO
            if head == "src/iotsec/":
                base = PACKAGE
                continue
            if not head.endswith("/"):  # the files at the top: "pyproject.toml  Makefile ..."
                entries.append((REPO, line.strip().replace("  ", ", ")))
                continue
        elif indent > 2 and entries:
            where, previous = entries[-1]
            entries[-1] = (where, f"{previous} {line.strip()}")
            continue
        dirs = _PACKAGE.findall(head)
        entries.append((base / dirs[-1] if dirs else base, line.strip()))
    return entries


def named_paths() -> list[Path]:
    """Every path the Layout block names."""
    found: list[Path] = []
    for where, entry in layout_entries():
        head, _, rest = entry.partition("  ")
        root = where if where in (REPO, PACKAGE) else where.parent
        if where in (REPO, PACKAGE) and not _PACKAGE.findall(head):
            root = where
        found += [root / name for name in re.split(r"[\s,]+", head) if name]
        found += [_resolve(where, name) for name in _MODULE.findall(rest)]
        found += [_resolve(where, name) for name in _PACKAGE.findall(rest)]
        for package, members in _MEMBERS.findall(rest):
            names = [m.strip() for m in members.split(",")]
            if all(_MEMBER.match(n) for n in names):
                found += [where / package / f"{n}.py" for n in names]
    return found


def _resolve(where: Path, name: str) -> Path:
    """``name`` under the entry's directory, or from the top of the repository when it
    starts with a top-level directory (``docs/benchmarks.md`` in the entry for bench/)."""
    first = name.split("/", 1)[0]
    if "/" in name and (REPO / first).is_dir() and not (where / first).exists():
        return REPO / name
    return where / name


def _exists(path: Path) -> bool:
    return any(path.parent.glob(path.name)) if "*" in path.name else path.exists()


def test_every_path_the_layout_names_exists() -> None:
    paths = named_paths()
    assert len(paths) > 100, "the Layout block was not parsed"
    missing = [str(p.relative_to(REPO)) for p in paths if not _exists(p)]
    assert not missing, f"docs/architecture.md's Layout names what does not exist: {missing}"


def test_the_layout_names_every_top_level_module_and_package() -> None:
    named = {p for p in named_paths() if p.parent == PACKAGE}
    actual = {p for p in PACKAGE.iterdir()
              if (p.suffix == ".py" and p.name != "__init__.py")
              or (p.is_dir() and (p / "__init__.py").exists())}
    assert not actual - named, f"missing from the Layout: {sorted(p.name for p in actual - named)}"
