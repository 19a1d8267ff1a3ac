"""``iotsec firmware publish``: an image (signed here first, if asked) verified and
published on a channel of the TUF update repository."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from iotsec.app.ota import firmware as firmware_service
from iotsec.app.ota import repo as ota_repo
from iotsec.cli.context import runtime
from iotsec.cli.firmware_keys import signing_passphrase
from iotsec.cli.options import JsonOpt
from iotsec.cli.ota_repo import KeysOpt, load_keys, print_outcome
from iotsec.firmware.image import ImageVersion
from iotsec.firmware.sign import SignOptions

__all__ = ["firmware_publish"]


def firmware_publish(
    image: Annotated[Path, typer.Argument(metavar="IMAGE", help="Signed MCUboot image.")],
    product: Annotated[str, typer.Option("--product", help="Product name.")],
    hardware: Annotated[list[str], typer.Option("--hardware", help="Hardware revision the "
                                                "image runs on (repeatable).")],
    channel: Annotated[str, typer.Option("--channel", help="Channel to serve it on.")
                       ] = "stable",
    targets_key: KeysOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Serve it even if older than what "
                                        "the channel serves.")] = False,
    sign_key: Annotated[Path | None, typer.Option(
        "--sign-key", help="IMAGE is a raw binary: sign it (MCUboot) with this firmware key "
        "file first.")] = None,
    sign_key_label: Annotated[str | None, typer.Option(
        "--sign-key-label", help="IMAGE is a raw binary: sign it with this firmware key in "
        "the home's key custody first.")] = None,
    version: Annotated[str | None, typer.Option(
        "--version", help="With --sign-key[-label]: major.minor.revision+build.")] = None,
    security_counter: Annotated[int | None, typer.Option(
        "--security-counter", help="With --sign-key[-label]: the anti-rollback counter.")
                                ] = None,
    header_size: Annotated[int, typer.Option("--header-size", help="With --sign-key[-label].")
                           ] = 0x200,
    as_json: JsonOpt = False,
) -> None:
    """Verify an image and publish it on a channel of the update repository.

    With --sign-key (a key file) or --sign-key-label (a key in custody), IMAGE is a raw
    binary that is signed first (header prepended, as 'firmware sign --pad-header' does).
    The image signature is then checked against the repository's firmware keys; an image
    older than what the channel serves is refused unless --force. Without a targets private
    key the new targets metadata is staged for offline signing."""
    signers = load_keys(targets_key)
    if sign_key is not None and sign_key_label is not None:
        raise typer.BadParameter("give --sign-key or --sign-key-label, not both",
                                 param_hint="--sign-key-label")
    signing = sign_key is not None or sign_key_label is not None
    if signing and version is None:
        raise typer.BadParameter("signing needs --version", param_hint="--version")
    if not signing and (version is not None or security_counter is not None):
        raise typer.BadParameter("--version and --security-counter need --sign-key or "
                                 "--sign-key-label")
    with contextlib.ExitStack() as stack:
        rt = stack.enter_context(runtime())
        if signing:
            assert version is not None
            options = SignOptions(version=ImageVersion.parse(version), header_size=header_size,
                                  pad_header=True, security_counter=security_counter)
            if sign_key_label is not None:
                signer = firmware_service.custody_signer(rt, sign_key_label)
            else:
                assert sign_key is not None
                signer = firmware_service.load_signer(
                    sign_key, lambda: signing_passphrase(new=False))
            work = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            signed = work / f"{image.name}.signed"
            firmware_service.sign_file(image, signed, signer, options)
            image = signed
        outcome = ota_repo.publish_image(rt, image, product=product, channel=channel,
                                         hardware=hardware, targets_signers=signers,
                                         force=force)
    print_outcome(outcome, as_json)
