"""The shell blocks of the guides in docs/ run as pasted, like the README's.

Each guide runs on its own, in a fresh directory (see :mod:`tests.docs.shellblocks`); a
block that needs something outside one machine is marked skipped, with the reason.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.docs import shellblocks
from tests.docs.test_readme import TIME_LIMIT, TOOLS

GUIDES = sorted((shellblocks.REPO / "docs").glob("*.md"))
WITH_COMMANDS = [g for g in GUIDES if shellblocks.shell_blocks(g)]


def test_the_guides_are_found() -> None:
    assert {"audit.md", "compliance.md", "emqx.md"} <= {g.name for g in WITH_COMMANDS}


@pytest.mark.parametrize("guide", WITH_COMMANDS, ids=lambda g: g.name)
def test_guide_shell_blocks_run_in_order(guide: Path) -> None:
    found = shellblocks.shell_blocks(guide)
    for block in found:
        if block.skip_reason is not None:
            assert len(block.skip_reason) >= 10, f"{guide.name}:{block.line}: say what it needs"
    runnable = [b for b in found if b.skip_reason is None]
    if not runnable:
        return  # every block needs something outside; the markers were checked above
    shellblocks.tools_used(runnable, TOOLS)
    with shellblocks.workdir() as workdir:
        outcome = shellblocks.run(guide, workdir, timeout=TIME_LIMIT)
    if outcome.failed is not None:
        pytest.fail(shellblocks.failure_message(guide, outcome), pytrace=False)
