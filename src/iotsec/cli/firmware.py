"""``iotsec firmware``: signing keys (:mod:`.firmware_keys`), signing, verifying and
inspecting MCUboot images (:mod:`.firmware_images`), and publishing them on the update
repository (:mod:`.firmware_publish`)."""

from __future__ import annotations

import typer

from iotsec.cli import firmware_images, firmware_keys
from iotsec.cli.firmware_publish import firmware_publish

__all__ = ["app"]

app = typer.Typer(help="Signed firmware images (MCUboot format): keys, sign, verify, inspect.",
                  no_args_is_help=True)
for command, name in (
    (firmware_keys.keygen, "keygen"), (firmware_keys.import_key, "import-key"),
    (firmware_keys.public_key, "public-key"), (firmware_images.sign, "sign"),
    (firmware_images.verify, "verify"), (firmware_images.inspect, "inspect"),
    (firmware_publish, "publish"),
):
    app.command(name)(command)
