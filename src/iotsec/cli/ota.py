"""``iotsec ota``: the TUF update repository, offline signing, releases and rollout campaigns;
and ``firmware_publish``, mounted as ``iotsec firmware publish``.

Root and targets keys are files the operator keeps offline (encrypted PKCS#8, made with
``iotsec ota key generate``). A command that is given a private key signs on the spot; one
given only public keys stages the metadata, to be signed elsewhere with
``iotsec ota metadata sign`` and brought back with ``iotsec ota metadata import``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from iotsec.app.ota import campaigns as ota
from iotsec.app.ota import firmware as firmware_service
from iotsec.app.ota import repo as ota_repo
from iotsec.app.ota.campaigns import CampaignInfo
from iotsec.app.wire.ota import (
    CampaignDeviceOut,
    CampaignOut,
    ReleaseOut,
    RepoOutcomeOut,
    RepoStatusOut,
    WrittenOut,
)
from iotsec.cli.context import runtime
from iotsec.cli.options import JsonOpt
from iotsec.cli.output import console, emit_json, plural, read_input, table, when, write_output
from iotsec.errors import FirmwareKeyError
from iotsec.firmware.campaign import CampaignState, DeviceStatus, Plan
from iotsec.firmware.image import ImageVersion
from iotsec.firmware.image_keys import FirmwareKeyType
from iotsec.firmware.releases import Release
from iotsec.firmware.sign import SignOptions
from iotsec.firmware.tufmeta import MAX_METADATA, Expiry
from iotsec.timeutil import parse_duration

__all__ = [
    "PASSPHRASE_ENV",
    "CampaignId",
    "KeysOpt",
    "app",
    "campaign_abort",
    "campaign_app",
    "campaign_create",
    "campaign_devices",
    "campaign_list",
    "campaign_pause",
    "campaign_resume",
    "campaign_status",
    "campaign_tick",
    "firmware_publish",
    "firmware_service_passphrase",
    "key_app",
    "key_generate",
    "metadata_app",
    "metadata_import",
    "metadata_sign",
    "release_app",
    "release_list",
    "repo_app",
    "repo_init",
    "repo_refresh",
    "repo_rotate",
    "repo_status",
]

PASSPHRASE_ENV = "IOTSEC_TUF_KEY_PASSPHRASE"  # noqa: S105 - a variable name
app = typer.Typer(help="Secure OTA: the TUF update repository and rollout campaigns.",
                  no_args_is_help=True)
repo_app = typer.Typer(help="The TUF update repository in the home.", no_args_is_help=True)
metadata_app = typer.Typer(help="Offline signing of root and targets metadata.",
                           no_args_is_help=True)
key_app = typer.Typer(help="Offline TUF signing keys.", no_args_is_help=True)
campaign_app = typer.Typer(help="Rollout campaigns.", no_args_is_help=True)
release_app = typer.Typer(help="Published releases.", no_args_is_help=True)
app.add_typer(repo_app, name="repo")
app.add_typer(metadata_app, name="metadata")
app.add_typer(key_app, name="key")
app.add_typer(release_app, name="release")
app.add_typer(campaign_app, name="campaign")

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


def _keys(paths: list[Path] | None) -> list[ota_repo.KeyFile]:
    cache: list[bytes] = []

    def secret() -> bytes:
        if not cache:
            cache.append(_passphrase())
        return cache[0]

    return [ota_repo.load_key_file(p, secret) for p in paths or []]


def _outcome(outcome: ota_repo.Outcome, as_json: bool) -> None:
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
    roots, targets = _keys(root_key), _keys(targets_key)
    trusted = firmware_service.load_trusted_keys(firmware_key or [])
    with runtime() as rt:
        outcome = ota_repo.init_repository(
            rt, root_keys=roots, root_threshold=root_threshold, targets_keys=targets,
            targets_threshold=targets_threshold, firmware_keys=trusted, expiry=expiry)
    _outcome(outcome, as_json)


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
    signers = _keys(sign_with)
    with runtime() as rt:
        outcome = ota_repo.rotate_keys(
            rt, root_signers=signers, online=online,
            root_keys=_keys(root_key) if root_key else None, root_threshold=root_threshold,
            targets_keys=_keys(targets_key) if targets_key else None,
            targets_threshold=targets_threshold)
    _outcome(outcome, as_json)


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
    signers = [k.signer for k in _keys(key) if k.signer is not None]
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
    _outcome(outcome, as_json)


# --------------------------------------------------------------------------- publish


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
    signers = _keys(targets_key)
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
                signer = firmware_service.load_signer(sign_key, firmware_service_passphrase)
            work = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            signed = work / f"{image.name}.signed"
            firmware_service.sign_file(image, signed, signer, options)
            image = signed
        outcome = ota_repo.publish_image(rt, image, product=product, channel=channel,
                                         hardware=hardware, targets_signers=signers,
                                         force=force)
    _outcome(outcome, as_json)


def firmware_service_passphrase() -> bytes:
    value = os.environ.get(firmware_service.PASSPHRASE_ENV)
    if value:
        return value.encode("utf-8")
    if sys.stdin.isatty():
        return str(typer.prompt("Key passphrase", hide_input=True, err=True)).encode()
    raise FirmwareKeyError("no passphrase for the firmware signing key",
                           hint=f"set {firmware_service.PASSPHRASE_ENV}")


@release_app.command("list")
def release_list(
    product: Annotated[str | None, typer.Option(help="Only this product.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Every publication of a release to a channel, oldest first."""
    with runtime() as rt:
        found = ota.list_releases(rt, product)
    if as_json:
        emit_json([ReleaseOut.from_domain(r) for r in found])
        return
    table("Releases", ["id", "product", "channel", "version", "counter", "hardware",
                       "published"],
          [(r.id, r.product, r.channel, r.version, r.security_counter, ", ".join(r.hardware),
            when(r.published_at)) for r in found])


# --------------------------------------------------------------------------- campaigns


def _show(c: CampaignInfo, as_json: bool) -> None:
    if as_json:
        emit_json(CampaignOut.from_domain(c))
        return
    console.print(f"Campaign {c.id} {c.name!r}: {c.state.value}"
                  + (f" ({c.reason})" if c.reason else ""), markup=False, soft_wrap=True)
    console.print(f"  release {c.release.product} {c.release.version} ({c.release.target}); "
                  f"{plural(c.totals.size, 'device')}; wave {c.current_wave + 1} of "
                  f"{len(c.plan.waves)} "
                  f"since {when(c.wave_started_at)}", markup=False, soft_wrap=True)
    columns = [s.value for s in DeviceStatus]
    table(None, ["wave", "upto %", *columns],
          [(i + 1, pct, *(w.counts.get(DeviceStatus(s), 0) for s in columns))
           for i, (pct, w) in enumerate(zip(c.plan.waves, c.waves, strict=True))])


CampaignId = Annotated[int, typer.Argument(metavar="ID", help="Campaign id.")]


@campaign_app.command("create")
def campaign_create(
    name: Annotated[str, typer.Option("--name")],
    product: Annotated[str, typer.Option("--product")],
    version: Annotated[str | None, typer.Option("--version", help="Release version (default: "
                                                "what --channel serves).")] = None,
    channel: Annotated[str | None, typer.Option("--channel")] = None,
    group: Annotated[str | None, typer.Option("--group", help="Target a device group.")
                     ] = None,
    device: Annotated[list[str] | None, typer.Option("--device", help="Target a device "
                                                     "(repeatable).")] = None,
    waves: Annotated[str, typer.Option("--waves", help="Cumulative percentages.")] = "100",
    failure_threshold: Annotated[float, typer.Option(
        "--failure-threshold", help="Pause when this percent of a wave fails.")] = 5.0,
    device_timeout: Annotated[str, typer.Option("--device-timeout")] = "24h",
    soak: Annotated[str, typer.Option("--soak", help="Wait after a finished wave.")] = "0s",
    as_json: JsonOpt = False,
) -> None:
    """Create and start a rollout campaign."""
    plan = Plan(waves=Plan.parse_waves(waves), failure_threshold=failure_threshold / 100,
                device_timeout=parse_duration(device_timeout), soak=parse_duration(soak))
    with runtime() as rt:
        info = ota.create_campaign(rt, name=name, product=product, plan=plan,
                                   version=ImageVersion.parse(version) if version else None,
                                   channel=channel, group=group, devices=device,
                                   actor="cli")
    _show(info, as_json)


@campaign_app.command("list")
def campaign_list(
    state: Annotated[str | None, typer.Option(help="active, paused, aborted, completed")
                     ] = None,
    as_json: JsonOpt = False,
) -> None:
    with runtime() as rt:
        found = ota.list_campaigns(rt, CampaignState(state) if state else None)
    if as_json:
        emit_json([CampaignOut.from_domain(c) for c in found])
        return
    table("Campaigns", ["id", "name", "state", "release", "devices", "wave", "installed",
                        "failed"],
          [(c.id, c.name, c.state.value, f"{c.release.product} {c.release.version}",
            c.totals.size, f"{c.current_wave + 1}/{len(c.plan.waves)}",
            c.totals.of(DeviceStatus.INSTALLED), c.totals.failures) for c in found])


@campaign_app.command("status")
def campaign_status(campaign_id: CampaignId, as_json: JsonOpt = False) -> None:
    """A campaign's state and per-wave progress (evaluated now: timeouts, waves)."""
    with runtime() as rt:
        info = ota.get_campaign(rt, campaign_id)
    _show(info, as_json)


@campaign_app.command("devices")
def campaign_devices(
    campaign_id: CampaignId,
    status: Annotated[str | None, typer.Option(help="Only devices in this status.")] = None,
    limit: Annotated[int, typer.Option()] = 1000,
    as_json: JsonOpt = False,
) -> None:
    with runtime() as rt:
        found = ota.campaign_devices(rt, campaign_id,
                                     status=DeviceStatus(status) if status else None,
                                     limit=limit)
    if as_json:
        emit_json([CampaignDeviceOut.from_domain(d) for d in found])
        return
    table(f"Campaign {campaign_id}", ["device", "wave", "status", "version", "updated",
                                      "detail"],
          [(d.device_id, d.wave + 1, d.status.value, d.version, when(d.updated_at), d.detail)
           for d in found])


@campaign_app.command("pause")
def campaign_pause(campaign_id: CampaignId,
                   reason: Annotated[str | None, typer.Option()] = None,
                   as_json: JsonOpt = False) -> None:
    with runtime() as rt:
        _show(ota.pause_campaign(rt, campaign_id, actor="cli", reason=reason), as_json)


@campaign_app.command("resume")
def campaign_resume(campaign_id: CampaignId, as_json: JsonOpt = False) -> None:
    """Resume a paused campaign (the current wave's failures so far are acknowledged)."""
    with runtime() as rt:
        _show(ota.resume_campaign(rt, campaign_id, actor="cli"), as_json)


@campaign_app.command("abort")
def campaign_abort(campaign_id: CampaignId,
                   reason: Annotated[str | None, typer.Option()] = None,
                   as_json: JsonOpt = False) -> None:
    """Stop a campaign for good; devices that have not started are cancelled."""
    with runtime() as rt:
        _show(ota.abort_campaign(rt, campaign_id, actor="cli", reason=reason), as_json)


@campaign_app.command("tick")
def campaign_tick(as_json: JsonOpt = False) -> None:
    """Evaluate every running campaign now (run it from cron to notice timeouts)."""
    with runtime() as rt:
        done = ota.tick(rt)
    if as_json:
        emit_json({str(k): v for k, v in done.items()})
        return
    for campaign_id, changes in done.items():
        for change in changes:
            console.print(f"campaign {campaign_id}: {change}", markup=False, soft_wrap=True)
