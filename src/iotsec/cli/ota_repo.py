"""``iotsec ota repo``, ``ota metadata`` and ``ota key``: the TUF update repository, its
offline signing, and the offline keys.

Root and targets keys are files the operator keeps offline (encrypted PKCS#8, made with
``iotsec ota key generate``). A command that is given a private key signs on the spot; one
given only public keys stages the metadata, to be signed elsewhere with
``iotsec ota metadata sign`` and brought back with ``iotsec ota metadata import``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from iotsec.app.ota import firmware as firmware_service
from iotsec.app.ota import repo as ota_repo
from iotsec.app.wire.ota import RepoOutcomeOut, RepoStatusOut, WrittenOut
from iotsec.cli.context import runtime
from iotsec.cli.options import JsonOpt
from iotsec.cli.output import console, emit_json, read_input, table, write_output
from iotsec.errors import FirmwareKeyError
from iotsec.firmware.image_keys import FirmwareKeyType
from iotsec.firmware.releases import Release
from iotsec.firmware.tufmeta import MAX_METADATA, Expiry
from iotsec.timeutil import parse_duration

__all__ = [
    "PASSPHRASE_ENV", "KeysOpt", "key_app", "key_generate", "load_keys", "metadata_app",
    "metadata_import", "metadata_sign", "print_outcome", "repo_app", "repo_init", "repo_refresh",
    "repo_rotate", "repo_status"
]

PASSPHRASE_ENV = "IOTSEC_TUF_KEY_PASSPHRASE"  # noqa: S105 - a variable name
repo_app = typer.Typer(help="The TUF update repository in the home.", no_args_is_help=True)
metadata_app = typer.Typer(help="Offline signing of root and targets metadata.",
                           no_args_is_help=True)
key_app = typer.Typer(help="Offline TUF signing keys.", no_args_is_help=True)

KeysOpt = Annotated[list[Path] | None, typer.Option(
    help="Key file: a private key (signs now) or a public key (stages for offline signing). "
    "Repeat for several.")]


def _passphrase() -> bytes:
    value = os.environ.get(PASSPHRASE_ENV) or os.environ.get(firmware_service.PASSPHRASE_ENV)
    if value:
        return value.encode("utf-8")
    if sys.stdin.isatty():
        return str(typer.prompt("TUF key passphrase", hide_input=True, err=True)).encode()
    raise FirmwareKeyError("no passphrase for the TUF signing key",
                           hint=f"set {PASSPHRASE_ENV}, or run in a terminal to be prompted")


def load_keys(paths: list[Path] | None) -> list[ota_repo.KeyFile]:
    """The TUF key files given on the command line (the passphrase is asked once, when a
    private key needs it)."""
    cache: list[bytes] = []

    def secret() -> bytes:
        if not cache:
            cache.append(_passphrase())
        return cache[0]

    return [ota_repo.load_key_file(p, secret) for p in paths or []]


def print_outcome(outcome: ota_repo.Outcome, as_json: bool) -> None:
    """What a repository change did: the release, the published and the staged files."""
    if as_json:
        emit_json(RepoOutcomeOut.from_domain(outcome))
        return
    if outcome.release is not None:
        r = outcome.release
        console.print(f"Release {r.product} {r.version} (security counter "
                      f"{r.security_counter}) for {', '.join(r.hardware)} on channel "
                      f"{r.channel}: {r.target}", markup=False, soft_wrap=True)
    if outcome.published:
        console.print(f"Published: {', '.join(outcome.published)}", markup=False,
                      soft_wrap=True)
    for path, count in outcome.staged:
        console.print(f"Staged for offline signing ({count}): {path}", markup=False,
                      soft_wrap=True)
        console.print("  sign it with 'iotsec ota metadata sign FILE --key KEY', then "
                      "'iotsec ota metadata import FILE'", markup=False)


# --------------------------------------------------------------------------- keys


@key_app.command("generate")
def key_generate(
    output: Annotated[Path, typer.Option("-o", "--output", help="Private key to write.")],
    public_out: Annotated[Path, typer.Option("--public-out", help="Public key to write.")],
    key_type: Annotated[str, typer.Option("-t", "--type", help="ed25519 or ecdsa-p256.")
                        ] = "ed25519",
    as_json: JsonOpt = False,
) -> None:
    """Generate an offline root or targets key (encrypted PKCS#8, 0600) and its public key."""
    kind = FirmwareKeyType.parse(key_type)
    if kind not in (FirmwareKeyType.ED25519, FirmwareKeyType.ECDSA_P256):
        raise typer.BadParameter("use ed25519 or ecdsa-p256", param_hint="--type")
    firmware_service.generate_key(output, kind, _passphrase(), public_out=public_out)
    key = ota_repo.load_key_file(public_out, _passphrase)
    if as_json:
        emit_json({"key": str(output), "public_key": str(public_out), "keyid": key.public.keyid})
        return
    console.print(f"Wrote {kind} TUF key {key.public.keyid[:16]} to {output}; public key "
                  f"{public_out}", markup=False, soft_wrap=True)


# --------------------------------------------------------------------------- repository


@repo_app.command("init")
def repo_init(
    root_key: KeysOpt = None,
    root_threshold: Annotated[int, typer.Option(help="Root signatures required.")] = 1,
    targets_key: KeysOpt = None,
    targets_threshold: Annotated[int, typer.Option(help="Targets signatures required.")] = 1,
    firmware_key: Annotated[list[Path] | None, typer.Option(
        help="Public key images must be signed with (repeatable).")] = None,
    root_expiry: Annotated[str, typer.Option(help="e.g. 365d")] = "365d",
    targets_expiry: Annotated[str, typer.Option(help="e.g. 90d")] = "90d",
    snapshot_expiry: Annotated[str, typer.Option(help="e.g. 7d")] = "7d",
    timestamp_expiry: Annotated[str, typer.Option(help="e.g. 1d")] = "1d",
    as_json: JsonOpt = False,
) -> None:
    """Create the update repository (online snapshot/timestamp keys go to key custody)."""
    expiry = Expiry(root=parse_duration(root_expiry), targets=parse_duration(targets_expiry),
                    snapshot=parse_duration(snapshot_expiry),
                    timestamp=parse_duration(timestamp_expiry))
    roots, targets = load_keys(root_key), load_keys(targets_key)
    trusted = firmware_service.load_trusted_keys(firmware_key or [])
    with runtime() as rt:
        outcome = ota_repo.init_repository(
            rt, root_keys=roots, root_threshold=root_threshold, targets_keys=targets,
            targets_threshold=targets_threshold, firmware_keys=trusted, expiry=expiry)
    print_outcome(outcome, as_json)


@repo_app.command("status")
def repo_status(as_json: JsonOpt = False) -> None:
    """Roles (version, expiry, threshold, keys), staged files and releases."""
    with runtime() as rt:
        s = ota_repo.status(rt)
    if as_json:
        emit_json(RepoStatusOut.from_domain(s))
        return
    table(f"Update repository {s.directory}", ["role", "version", "expires", "threshold",
                                                "keys"],
          [(r.role, r.version, r.expires, r.threshold, " ".join(r.keys)) for r in s.roles])
    for path, count in s.staged:
        console.print(f"Staged ({count}): {path}", markup=False, soft_wrap=True)
    _releases_table([(r) for r in s.releases])


def _releases_table(found: list[Release]) -> None:
    table("Releases", ["product", "version", "security counter", "hardware", "channel",
                       "target"],
          [(r.product, r.version, r.security_counter, ", ".join(r.hardware), r.channel,
            r.target) for r in found])


@repo_app.command("refresh")
def repo_refresh(
    force: Annotated[bool, typer.Option("--force", help="Re-sign even if not due.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Re-sign snapshot and timestamp when due (run it from cron, e.g. hourly)."""
    with runtime() as rt:
        written = ota_repo.refresh(rt, force=force)
    if as_json:
        emit_json(WrittenOut(written=written))
        return
    console.print(f"Re-signed: {', '.join(written)}" if written else "Nothing was due",
                  markup=False)


@repo_app.command("rotate")
def repo_rotate(
    online: Annotated[bool, typer.Option("--online", help="New snapshot and timestamp keys."
                                         )] = False,
    root_key: KeysOpt = None,
    root_threshold: Annotated[int | None, typer.Option()] = None,
    targets_key: KeysOpt = None,
    targets_threshold: Annotated[int | None, typer.Option()] = None,
    sign_with: Annotated[list[Path] | None, typer.Option(
        help="Root private key to sign the new root with (old and new keys; repeatable).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Stage the next root version with new keys or thresholds."""
    signers = load_keys(sign_with)
    with runtime() as rt:
        outcome = ota_repo.rotate_keys(
            rt, root_signers=signers, online=online,
            root_keys=load_keys(root_key) if root_key else None, root_threshold=root_threshold,
            targets_keys=load_keys(targets_key) if targets_key else None,
            targets_threshold=targets_threshold)
    print_outcome(outcome, as_json)


# --------------------------------------------------------------------------- metadata


@metadata_app.command("sign")
def metadata_sign(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="Staged root or targets file.")],
    key: Annotated[list[Path], typer.Option("-k", "--key", help="Private key (repeatable).")],
    output: Annotated[Path | None, typer.Option("-o", "--output",
                                                help="Write here (default: in place).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Add signatures to a staged metadata file (works without a home: the offline step)."""
    data = read_input(str(file), MAX_METADATA["root"] * 10, "metadata file")
    signers = [k.signer for k in load_keys(key) if k.signer is not None]
    if not signers:
        raise typer.BadParameter("give private keys to sign with", param_hint="--key")
    signed, role = ota_repo.sign_metadata(data, signers)
    target = output or file
    write_output(str(target), signed)
    if as_json:
        emit_json({"file": str(target), "role": role, "signed_by": [s.public_key.keyid
                                                                    for s in signers]})
        return
    console.print(f"Signed {role} metadata with {len(signers)} key(s): {target}",
                  markup=False, soft_wrap=True)


@metadata_app.command("import")
def metadata_import(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="Signed root or targets file.")],
    as_json: JsonOpt = False,
) -> None:
    """Import signed metadata: verified against the trusted root, then published."""
    data = read_input(str(file), max(MAX_METADATA.values()), "metadata file")
    with runtime() as rt:
        outcome = ota_repo.import_metadata(rt, data)
    print_outcome(outcome, as_json)

