"""``iotsec ota``: secure OTA, one command group per module: the TUF update repository,
its offline signing and keys (:mod:`.ota_repo`), and the published releases and rollout
campaigns (:mod:`.ota_campaigns`). ``iotsec firmware publish`` is :mod:`.firmware_publish`.
"""

from __future__ import annotations

import typer

from iotsec.cli.ota_campaigns import campaign_app, release_app
from iotsec.cli.ota_repo import key_app, metadata_app, repo_app

__all__ = ["app"]

app = typer.Typer(help="Secure OTA: the TUF update repository and rollout campaigns.",
                  no_args_is_help=True)
app.add_typer(repo_app, name="repo")
app.add_typer(metadata_app, name="metadata")
app.add_typer(key_app, name="key")
app.add_typer(release_app, name="release")
app.add_typer(campaign_app, name="campaign")
