"""The README's shell blocks run as pasted, in order, in a fresh directory.

A reader with ``iotsec`` on PATH pastes the blocks one after another into one terminal;
this test does exactly that (see :mod:`tests.docs.shellblocks`), so an example that stops
working, or a variable or input file a block uses and no block makes, fails here naming
the block and its line. Only blocks that need something outside one machine (an EMQX
cluster, running the project from its checkout) are skipped, each with its reason.
"""

from __future__ import annotations

import pytest

from tests.docs import shellblocks

README = shellblocks.REPO / "README.md"
#: The real tools README blocks call, and how to install each.
TOOLS = {
    "openssl": "Debian package 'openssl'",
    "mosquitto": "Debian package 'mosquitto'",
    "mosquitto_pub": "Debian package 'mosquitto-clients'",
    "nft": "Debian package 'nftables'",
    "softhsm2-util": "Debian package 'softhsm2'",
    "curl": "Debian package 'curl'",
    "imgtool": "the dev extra: pip install -e '.[dev]'",
}
#: A README that skips more than this many blocks is no longer proven by this test.
MAX_SKIPPED = 3
#: Seconds the whole README may take (a bound against a block that hangs, not a speed goal:
#: about 5 minutes on an idle 2-CPU machine, twice that when other work shares it); the
#: blocks use small keys and port ranges for it.
TIME_LIMIT = 900


def test_every_skipped_block_says_why_and_few_are() -> None:
    found = shellblocks.shell_blocks(README)
    skipped = [b for b in found if b.skip_reason is not None]
    assert len(found) > 10, "the README's shell blocks were not found"
    assert len(skipped) <= MAX_SKIPPED, [f"README.md:{b.line}" for b in skipped]
    for block in skipped:
        assert len(block.skip_reason or "") >= 10, f"README.md:{block.line}: say what it needs"


def test_readme_shell_blocks_run_in_order() -> None:
    runnable = [b for b in shellblocks.shell_blocks(README) if b.skip_reason is None]
    shellblocks.tools_used(runnable, TOOLS)
    with shellblocks.workdir() as workdir:
        outcome = shellblocks.run(README, workdir, timeout=TIME_LIMIT)
    if outcome.failed is not None:
        pytest.fail(shellblocks.failure_message(README, outcome), pytrace=False)
