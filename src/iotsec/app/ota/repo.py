"""The TUF update repository in the home (``$IOTSEC_HOME/tuf``): create it, publish images,
stage metadata for offline signing, import what was signed, and keep the online roles fresh.

Layout (what an HTTP server, or ``/v1/ota/tuf/...``, serves as is)::

    tuf/config.json                 expiry per role, online key labels, trusted image keys
    tuf/metadata/N.root.json        every root version (clients walk them one by one)
    tuf/metadata/root.json          the newest root
    tuf/metadata/N.targets.json     consistent snapshots: every version under its number
    tuf/metadata/N.snapshot.json
    tuf/metadata/timestamp.json     the only file whose name never changes
    tuf/targets/PRODUCT/SHA256.NAME images and channel pointers, named by their hash
    tuf/staged/N.ROLE.json          root or targets metadata waiting for offline signatures

Root and targets keys never enter the home: their holders sign staged files elsewhere
(``iotsec ota metadata sign``) and the result is imported (``iotsec ota metadata import``),
or they pass their key files to a command that signs on the spot. Snapshot and timestamp
keys are online, in key custody (:mod:`iotsec.custody`, encrypted at rest), and are rotated
by staging a new root that names fresh ones.

Every change holds an exclusive lock on ``tuf/.lock``; files are replaced atomically and
the timestamp is written last, so a client never sees a half-published state.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from securesystemslib.signer._key import Key
from tuf.api._payload import TargetFile, Targets

from iotsec.app.events import Event
from iotsec.app.ota.repo_files import Config, Repo
from iotsec.app.ota.repo_keys import (
    KeyFile,
    load_key_file,
    new_online_keys,
    online_keys,
    sign_metadata,
    signers_of,
)
from iotsec.app.ota.repo_metadata import Outcome, advance, import_one, refresh_online
from iotsec.app.ota.repo_status import RepoStatus, RoleStatus, status
from iotsec.app.runtime import Runtime
from iotsec.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    OtaRepositoryError,
    ReleaseDowngradeError,
    TufMetadataError,
    TufThresholdError,
)
from iotsec.filesystem import staged_file
from iotsec.firmware import releases as rel
from iotsec.firmware import tufmeta as t
from iotsec.firmware.image_keys import TrustedKey, public_pem
from iotsec.firmware.verify import verify_image
from iotsec.timeutil import ts

_METADATA_NAME = re.compile(
    r"(?:[1-9][0-9]{0,9}\.)?(root|targets|snapshot|timestamp)\.json")
#: Largest image the repository accepts (the MCUboot format's own limit is 4 GiB).
MAX_IMAGE = 4 * 1024**3
_CHUNK = 1024 * 1024


# --------------------------------------------------------------------------- use cases


def init_repository(rt: Runtime, *, root_keys: Sequence[KeyFile], root_threshold: int,
                    targets_keys: Sequence[KeyFile], targets_threshold: int,
                    firmware_keys: Sequence[TrustedKey], expiry: t.Expiry | None = None
                    ) -> Outcome:
    """Create the repository: online keys in custody, root and (empty) targets version 1,
    signed now with whatever private keys were given, staged otherwise."""
    repo = Repo(rt)
    if not firmware_keys:
        raise InvalidInputError("the repository needs the public key(s) images are signed with",
                                hint="give --firmware-key PUB.pem")
    with repo.locked(create=True):
        if repo.exists:
            raise ConflictError(f"an update repository already exists in {repo.dir}",
                                hint="see 'iotsec ota repo status'")
        expiry = expiry or t.Expiry()
        labels = new_online_keys(rt)
        now = rt.now()
        keys = {t.ROOT: [k.public for k in root_keys],
                t.TARGETS: [k.public for k in targets_keys], **online_keys(rt, labels)}
        root = t.sign(t.new_root(keys=keys, thresholds={t.ROOT: root_threshold,
                                                        t.TARGETS: targets_threshold},
                                 now=now, expiry=expiry), signers_of(root_keys))
        targets = t.sign(t.new_targets(None, now=now, expiry=expiry), signers_of(targets_keys))
        config = Config(expiry=expiry, online=labels,
                         firmware_keys=[public_pem(k.public_key).decode() for k in firmware_keys])
        repo.save_config(config)
        for md in (root, targets):
            repo.write(repo.staged / f"1.{md.signed.type}.json", t.serialize(md))
        outcome = advance(repo, config)
    rt.events.record(Event(rt.now(), "ota.repository", "success", subject=str(repo.dir),
                           detail={"action": "init", "published": list(outcome.published)}))
    return outcome


def refresh(rt: Runtime, *, force: bool = False) -> list[str]:
    """Re-sign the online roles if due (run it from cron, or let the server do it when a
    device asks for the timestamp). Returns the files written."""
    repo = Repo(rt)
    with repo.locked():
        config = repo.config()
        if repo.root() is None or repo.targets_md() is None:
            raise OtaRepositoryError("the repository has no signed root and targets yet",
                                     hint="import the signed staged metadata first")
        return refresh_online(repo, config, force=force)


def import_metadata(rt: Runtime, data: bytes) -> Outcome:
    """Import a root or targets file signed offline: it replaces the staged one of the same
    version; what meets its threshold is published (with fresh snapshot and timestamp)."""
    repo = Repo(rt)
    role = t.role_of(data)
    if role not in t.OFFLINE_ROLES:
        raise TufMetadataError(f"{role} metadata is signed online; only root and targets are "
                               "imported")
    md = t.load(data, role)
    with repo.locked():
        config = repo.config()
        staged = repo.staged / f"{md.signed.version}.{role}.json"
        if staged.exists():
            base = t.load(staged.read_bytes(), role)
            if base.signed_bytes != md.signed_bytes:
                raise TufMetadataError(f"the signed {role} differs from the staged version "
                                       f"{md.signed.version}", hint="sign the staged file as "
                                       "it is; any change needs a new staged version")
            for sig in md.signatures.values():
                base.signatures[sig.keyid] = sig
            md = base
        else:
            # Not staged here (or already published): it must stand on its own now.
            import_one(repo, config, md, rt.now())
            outcome = advance(repo, config)
            return Outcome((f"{md.signed.version}.{role}.json", *outcome.published),
                           outcome.staged)
        repo.write(staged, t.serialize(md))
        outcome = advance(repo, config)
        waiting = dict(outcome.staged).get(str(staged))
        if waiting is not None:
            raise TufThresholdError(
                f"{role} metadata version {md.signed.version} is signed by {waiting}; the "
                "signatures given were kept with the staged file",
                hint="have more key holders sign it ('iotsec ota metadata sign') and import "
                "it again")
    rt.events.record(Event(rt.now(), "ota.repository", "success", subject=role,
                           detail={"action": "import", "published": list(outcome.published)}))
    return outcome


def rotate_keys(rt: Runtime, *, root_signers: Sequence[KeyFile] = (), online: bool = False,
                root_keys: Sequence[KeyFile] | None = None, root_threshold: int | None = None,
                targets_keys: Sequence[KeyFile] | None = None,
                targets_threshold: int | None = None) -> Outcome:
    """Stage the next root version: fresh online keys (``online``), other root or targets
    keys and thresholds. Signed with ``root_signers`` (old and new root keys, as many as
    the thresholds need), published when both thresholds are met, staged otherwise."""
    repo = Repo(rt)
    with repo.locked():
        config = repo.config()
        if repo.staged_path(t.ROOT) is not None:
            raise ConflictError("a new root is already staged",
                                hint="sign and import it first, or remove tuf/staged/*.root.json")
        current = repo.trusted_root()
        replace: dict[str, list[Key]] = {}
        if online:
            labels = new_online_keys(rt)
            config.pending_online[str(current.version + 1)] = labels
            replace.update(online_keys(rt, labels))
        if root_keys is not None:
            replace[t.ROOT] = [k.public for k in root_keys]
        if targets_keys is not None:
            replace[t.TARGETS] = [k.public for k in targets_keys]
        if not replace and root_threshold is None and targets_threshold is None:
            raise InvalidInputError("nothing to rotate", hint="give --online, --root-key, "
                                    "--targets-key or a threshold")
        thresholds = {r: v for r, v in ((t.ROOT, root_threshold),
                                        (t.TARGETS, targets_threshold)) if v is not None}
        md = t.sign(t.next_root(current, now=rt.now(), expiry=config.expiry, replace=replace,
                                thresholds=thresholds), signers_of(root_signers))
        repo.save_config(config)
        repo.write(repo.staged / f"{md.signed.version}.root.json", t.serialize(md))
        outcome = advance(repo, config)
    rt.events.record(Event(rt.now(), "ota.repository", "success", subject="root",
                           detail={"action": "rotate", "roles": sorted(replace),
                                   "published": list(outcome.published)}))
    return outcome


def firmware_keys(rt: Runtime) -> list[TrustedKey]:
    return [TrustedKey.from_bytes(pem.encode()) for pem in Repo(rt).config().firmware_keys]


def _copy_hashed(src: BinaryIO, size: int, out: BinaryIO) -> str:
    """Copy exactly ``size`` bytes of ``src`` to ``out``; their SHA-256 in hex."""
    digest = hashlib.sha256()
    copied = 0
    while chunk := src.read(_CHUNK):
        copied += len(chunk)
        if copied > size:
            break
        digest.update(chunk)
        out.write(chunk)
    if copied != size:
        raise ConflictError("the image changed while it was being published",
                            hint="publish it again")
    return digest.hexdigest()


def publish_image(rt: Runtime, path: Path, *, product: str, channel: str,
                  hardware: Sequence[str], targets_signers: Sequence[KeyFile] = (),
                  force: bool = False) -> Outcome:
    """Verify an image against the repository's image keys, copy it into the repository
    and list it in a new targets version (with the channel pointer moved to it). Signed
    and published at once when the targets keys were given, staged otherwise."""
    product = rel.parse_name(product, "product")
    channel = rel.parse_name(channel, "channel")
    hardware = tuple(sorted({rel.parse_name(h, "hardware") for h in hardware}))
    if not hardware:
        raise InvalidInputError("name the hardware the image is built for",
                                hint="give --hardware REV (repeat for several)")
    repo = Repo(rt)
    try:
        src = path.open("rb")
    except FileNotFoundError:
        raise NotFoundError(f"image {path} does not exist", hint="check the path") from None
    except IsADirectoryError:
        raise InvalidInputError(f"{path} is a directory", hint="give an image file") from None
    with src, repo.locked():
        size = os.fstat(src.fileno()).st_size
        if size > MAX_IMAGE:
            raise InvalidInputError(f"the image is {size} bytes; the limit is {MAX_IMAGE}")
        config = repo.config()
        verified = verify_image(src, firmware_keys(rt), 0, max_image_size=size)
        staged_path = repo.staged_path(t.TARGETS)
        base_md = (t.load(staged_path.read_bytes(), t.TARGETS) if staged_path is not None
                   else repo.targets_md())
        base = base_md.signed if base_md is not None else None
        release = rel.Release(product=product, version=verified.version,
                            security_counter=verified.security_counter, hardware=hardware,
                            channel=channel, target=rel.image_path(product, verified.version),
                            image_hash=verified.digest.hex(), signed_by=verified.key.key_id,
                            published_at=ts(rt.now()))
        _check_channel(base, release, force)
        src.seek(0)
        repo.targets.mkdir(parents=True, exist_ok=True)
        # Streamed into a staged file that becomes the target only once it is known to be
        # complete and new; any refusal below discards it.
        with staged_file(repo.targets / "incoming", mode=0o644) as incoming:
            sha256 = _copy_hashed(src, size, incoming.file)
            existing = base.targets.get(release.target) if base is not None else None
            if existing is not None and existing.hashes.get("sha256") != sha256:
                raise ConflictError(f"{product} {verified.version} is already published "
                                    "with other content",
                                    hint="give every build its own version")
            final = repo.target_file(release.target, sha256)
            final.parent.mkdir(parents=True, exist_ok=True)
            incoming.replace(final)
        image: TargetFile = rel.release_target(release, size, sha256)
        pointer, pointer_bytes = rel.pointer_target(release)
        repo.write(repo.target_file(pointer.path, pointer.hashes["sha256"]), pointer_bytes)
        md = t.new_targets(base, now=rt.now(), expiry=config.expiry, add=[image, pointer])
        if base_md is not None and staged_path is not None:
            md.signed.version = base_md.signed.version  # replaces the unsigned staged draft
            staged_path.unlink()
        t.sign(md, signers_of(targets_signers))
        repo.write(repo.staged / f"{md.signed.version}.targets.json", t.serialize(md))
        outcome = advance(repo, config)
    rt.events.record(Event(rt.now(), "ota.publish", "success", subject=release.target,
                           detail={"product": product, "channel": channel,
                                   "version": str(release.version),
                                   "security_counter": release.security_counter,
                                   "staged": bool(outcome.staged)}))
    return Outcome(outcome.published, outcome.staged, release)


def _check_channel(base: Targets | None, release: rel.Release, force: bool) -> None:
    head = rel.channel_head(base, release.product, release.channel) if base else None
    if head is None or force:
        return
    older = release.version < head.version
    lower = (head.security_counter or 0) > (release.security_counter or 0)
    if older or lower:
        raise ReleaseDowngradeError(
            f"channel {release.channel} of {release.product} serves {head.version} (security "
            f"counter {head.security_counter}); {release.version} (security counter "
            f"{release.security_counter}) is older")
    if release.version == head.version:
        raise ConflictError(f"channel {release.channel} already serves {head.version}",
                            hint="publish a new version")


def metadata_file(rt: Runtime, name: str) -> Path:
    """The published metadata file ``name`` (e.g. ``3.root.json``, ``timestamp.json``) for
    serving; the timestamp is refreshed first when it is due."""
    if not _METADATA_NAME.fullmatch(name):
        raise NotFoundError(f"no metadata file {name[:80]!r}")
    repo = Repo(rt)
    if name == "timestamp.json" and repo.exists:
        with contextlib.suppress(OtaRepositoryError):
            refresh(rt)
    path = repo.metadata / name
    if not path.is_file():
        raise NotFoundError(f"no metadata file {name}")
    return path


def download_target(rt: Runtime, path: str, device_id: str) -> Path:
    """The target file a device downloads, recorded as an ``ota.download`` event."""
    found = target_file(rt, path)
    rt.events.record(Event(rt.now(), "ota.download", "success", actor=device_id,
                           subject=path[:256]))
    return found


def target_file(rt: Runtime, path: str) -> Path:
    """A published target file (``PRODUCT/SHA256.NAME`` or under ``channels/``)."""
    directory, _, name = path.rpartition("/")
    hashed, _, base = name.partition(".")
    try:
        rel.check_target_path(f"{directory}/{base}")
    except TufMetadataError:
        raise NotFoundError("no such target") from None
    repo = Repo(rt)
    if len(hashed) != 64 or not all(c in "0123456789abcdef" for c in hashed):
        raise NotFoundError("no such target")
    found = repo.target_file(f"{directory}/{base}", hashed)
    if not found.is_file():
        raise NotFoundError("no such target")
    return found


__all__ = [
    "MAX_IMAGE",
    "KeyFile",
    "Outcome",
    "RepoStatus",
    "RoleStatus",
    "download_target",
    "firmware_keys",
    "import_metadata",
    "init_repository",
    "load_key_file",
    "metadata_file",
    "publish_image",
    "refresh",
    "rotate_keys",
    "sign_metadata",
    "status",
    "target_file",
]
