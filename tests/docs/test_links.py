"""Every relative link of the README and the guides in docs/ points at a file that exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.docs.shellblocks import REPO

DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
_LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda d: str(d.relative_to(REPO)))
def test_relative_links_resolve(document: Path) -> None:
    text = document.read_text(encoding="utf-8")
    targets = [t.split("#", 1)[0] for t in _LINK.findall(text)
               if not re.match(r"^[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]
    missing = [t for t in targets if t and not (document.parent / t).exists()]
    assert not missing, f"{document.relative_to(REPO)} links to what does not exist: {missing}"
