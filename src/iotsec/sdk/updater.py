"""The device-side updater: find, download and verify firmware updates with TUF.

A device embeds two trust anchors at manufacture: the TUF root metadata of its fleet's
update repository and the public key(s) its firmware images are signed with (the same keys
MCUboot checks at boot). Everything else it downloads is untrusted until verified:

1. python-tuf's ``ngclient`` refreshes root, timestamp, snapshot and targets metadata, with
   every check TUF specifies: thresholds of trusted keys, expiry (freeze attacks), versions
   that never go back (rollback), the snapshot's view of targets (mix-and-match), and size
   limits on every download (endless data). The trusted metadata is kept in
   ``metadata_dir``, so a later run cannot be rolled back either.
2. The release comes from the signed ``custom`` data of a target: the channel pointer, or
   the target a rollout campaign names. Its product and hardware must be the device's, its
   version newer than the running one, its security counter not below the device's.
3. The image is downloaded through TUF (length and SHA-256 from the signed targets
   metadata: arbitrary software is refused), then verified as an MCUboot image with the
   device's own keys and anti-rollback counter, and must be the image the metadata names.

:class:`DeviceFetcher` sends a fresh device token with every request (tokens are single
use), and :class:`OtaServer` asks the iotsec server what to install and reports progress.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import urllib3
from tuf.api import exceptions as tuf_errors
from tuf.api._payload import TargetFile
from tuf.ngclient.config import UpdaterConfig
from tuf.ngclient.fetcher import FetcherInterface
from tuf.ngclient.updater import Updater

from iotsec.errors import (
    HardwareMismatchError,
    IotsecError,
    OtaDownloadError,
    OtaEndlessDataError,
    OtaError,
    OtaTargetError,
    SecurityCounterError,
    TufExpiredError,
    TufMetadataError,
    TufRollbackError,
    TufThresholdError,
)
from iotsec.firmware.image import ImageVersion
from iotsec.firmware.image_keys import TrustedKey
from iotsec.firmware.releases import Release, channel_path, parse_name
from iotsec.firmware.tufmeta import MAX_METADATA
from iotsec.firmware.verify import VerifiedImage, verify_image

__all__ = [
    "MAX_API_RESPONSE", "Assignment", "DeviceFetcher", "DownloadedUpdate", "OtaServer",
    "OtaUpdater", "TokenSource", "Update"
]

TokenSource = Callable[[], str]
#: Largest answer the server's device endpoints give (assignment, report result).
MAX_API_RESPONSE = 64 * 1024


class DeviceFetcher(FetcherInterface):
    """An ngclient fetcher over urllib3 that authenticates every request with a new device
    token (``Authorization: Bearer``) when a token source is given. TUF bounds every
    download itself (:meth:`FetcherInterface.download_file`)."""

    def __init__(self, token: TokenSource | None = None, *, timeout: float = 30.0,
                 chunk_size: int = 256 * 1024) -> None:
        self._token = token
        self._timeout = urllib3.Timeout(connect=timeout, read=timeout)
        self._chunk = chunk_size
        self._pool = urllib3.PoolManager(retries=False)

    def _fetch(self, url: str) -> Iterator[bytes]:
        headers = {"User-Agent": "iotsec-sdk"}
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token()}"
        try:
            response = self._pool.request("GET", url, headers=headers, preload_content=False,
                                          timeout=self._timeout, redirect=False)
        except urllib3.exceptions.TimeoutError as exc:
            raise tuf_errors.SlowRetrievalError from exc
        if response.status >= 400:
            # Closed, not returned to the pool: an unread body must never be taken for the
            # next response on a kept-alive connection.
            response.close()
            raise tuf_errors.DownloadHTTPError(f"HTTP {response.status}", response.status)
        return self._chunks(response)

    def _chunks(self, response: urllib3.BaseHTTPResponse) -> Iterator[bytes]:
        try:
            yield from response.stream(self._chunk)
        except urllib3.exceptions.TimeoutError as exc:
            raise tuf_errors.SlowRetrievalError from exc
        finally:
            # A download cut off at its length limit leaves bytes unread: close, never reuse.
            response.close()


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    """python-tuf's exceptions, as the iotsec error that names the attack they stopped."""
    try:
        yield
    except tuf_errors.ExpiredMetadataError as exc:
        raise TufExpiredError(f"update metadata expired: {exc}",
                              hint="the update server is stale or frozen; try again later "
                              "or contact the fleet operator") from exc
    except tuf_errors.BadVersionNumberError as exc:
        raise TufRollbackError(f"update metadata went back or does not match: {exc}",
                               hint="the update server offered old or mismatched metadata; "
                               "nothing was installed") from exc
    except tuf_errors.UnsignedMetadataError as exc:
        raise TufThresholdError(f"update metadata is not signed by enough trusted keys: "
                                f"{exc}", hint="nothing was installed") from exc
    except tuf_errors.LengthOrHashMismatchError as exc:
        raise OtaTargetError(f"a download does not match the signed metadata: {exc}") from exc
    except tuf_errors.DownloadLengthMismatchError as exc:
        raise OtaEndlessDataError(f"the server sent too much data: {exc}") from exc
    except tuf_errors.DownloadError as exc:
        raise OtaDownloadError(f"download failed: {exc}") from exc
    except tuf_errors.RepositoryError as exc:
        raise TufMetadataError(f"update metadata refused: {exc}") from exc


@dataclass(frozen=True)
class Update:
    """A newer release, found in verified TUF metadata, not yet downloaded."""

    release: Release
    target: TargetFile
    _updater: Updater

    @property
    def length(self) -> int:
        return int(self.target.length)

    @property
    def sha256(self) -> str:
        return str(self.target.hashes["sha256"])


@dataclass(frozen=True)
class DownloadedUpdate:
    release: Release
    path: Path
    image: VerifiedImage


class OtaUpdater:
    """Finds and downloads updates for one device (see the module docstring)."""

    def __init__(self, *, metadata_dir: Path, targets_dir: Path, metadata_url: str,
                 targets_url: str, trusted_root: bytes, firmware_keys: Sequence[TrustedKey],
                 product: str, hardware: str, channel: str = "stable",
                 fetcher: FetcherInterface | None = None) -> None:
        if not firmware_keys:
            raise OtaError("the updater needs the firmware public key(s) images are signed "
                           "with", hint="embed the fleet's image keys in the device")
        if len(trusted_root) > MAX_METADATA["root"]:
            raise TufMetadataError("the trusted root metadata is too large")
        self._metadata_dir = metadata_dir
        self._targets_dir = targets_dir
        self._metadata_url = metadata_url
        self._targets_url = targets_url
        self._root = trusted_root
        self._keys = tuple(firmware_keys)
        self.product = parse_name(product, "product")
        self.hardware = parse_name(hardware, "hardware")
        self.channel = parse_name(channel, "channel")
        self._fetcher = fetcher or DeviceFetcher()

    def _updater(self) -> Updater:
        self._metadata_dir.mkdir(parents=True, exist_ok=True)
        self._targets_dir.mkdir(parents=True, exist_ok=True)
        with _translated():
            return Updater(metadata_dir=str(self._metadata_dir),
                           metadata_base_url=self._metadata_url,
                           target_dir=str(self._targets_dir),
                           target_base_url=self._targets_url, fetcher=self._fetcher,
                           config=UpdaterConfig(), bootstrap=self._root)

    def check(self, installed: ImageVersion, min_security_counter: int = 0, *,
              target: str | None = None) -> Update | None:
        """Refresh the metadata and return the update to install, if there is one: the
        release at ``target`` (a campaign's), else the one this device's channel serves.
        ``None`` when it is not newer than ``installed``."""
        updater = self._updater()
        with _translated():
            updater.refresh()
            if target is None:
                pointer = updater.get_targetinfo(channel_path(self.product, self.channel))
                if pointer is None:
                    return None
                target = Release.from_custom(pointer.custom).target
            info = updater.get_targetinfo(target)
        if info is None:
            raise OtaTargetError(f"the signed metadata lists no target {target[:100]!r}")
        release = Release.from_custom(info.custom)
        if release.target != info.path:
            raise OtaTargetError("the target's release metadata names another target")
        if release.product != self.product or self.hardware not in release.hardware:
            raise HardwareMismatchError(
                f"{release.target} is built for {release.product} on "
                f"{', '.join(release.hardware)}; this device is {self.product} on "
                f"{self.hardware}")
        if release.version <= installed:
            return None
        if (release.security_counter or 0) < min_security_counter:
            raise SecurityCounterError(f"{release.target} has security counter "
                                       f"{release.security_counter}; this device requires at "
                                       f"least {min_security_counter}")
        return Update(release, info, updater)

    def download(self, update: Update, min_security_counter: int = 0) -> DownloadedUpdate:
        """Download through TUF, then verify the MCUboot image with the device's keys."""
        with _translated():
            path = Path(update._updater.download_target(update.target))
        with path.open("rb") as fh:
            verified = verify_image(fh, self._keys, min_security_counter,
                                    max_image_size=update.length)
        release = update.release
        if verified.digest.hex() != release.image_hash or verified.version != release.version:
            path.unlink(missing_ok=True)
            raise OtaTargetError("the image is not the one its metadata describes (hash or "
                                 "version differ)")
        return DownloadedUpdate(release, path, verified)


@dataclass(frozen=True)
class Assignment:
    """What the server asks the device to install (untrusted until TUF verifies it)."""

    campaign_id: int
    target: str
    version: str


class OtaServer:
    """The iotsec server's device endpoints: the current assignment, and reports."""

    def __init__(self, base_url: str, token: TokenSource, *, timeout: float = 30.0) -> None:
        self._base = base_url.rstrip("/")
        self._token = token
        self._timeout = urllib3.Timeout(connect=timeout, read=timeout)
        self._pool = urllib3.PoolManager(retries=False)

    @property
    def metadata_url(self) -> str:
        return f"{self._base}/v1/ota/tuf/metadata/"

    @property
    def targets_url(self) -> str:
        return f"{self._base}/v1/ota/tuf/targets/"

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        headers = {"Authorization": f"Bearer {self._token()}", "User-Agent": "iotsec-sdk"}
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body).encode()
        try:
            response = self._pool.request(method, f"{self._base}{path}", body=data,
                                          headers=headers, preload_content=False,
                                          timeout=self._timeout, redirect=False)
        except urllib3.exceptions.HTTPError as exc:
            raise OtaDownloadError(f"the update server cannot be reached: "
                                   f"{type(exc).__name__}") from exc
        try:
            raw = response.read(MAX_API_RESPONSE + 1, decode_content=True)
        finally:
            response.close()
        if len(raw) > MAX_API_RESPONSE:
            raise OtaEndlessDataError("the server's answer is too large")
        try:
            payload = json.loads(raw) if raw else None
        except ValueError as exc:
            raise OtaDownloadError("the server's answer is not JSON") from exc
        if response.status >= 400:
            detail = payload.get("detail") if isinstance(payload, dict) else None
            error = IotsecError(f"the server refused {method} {path}: HTTP {response.status}"
                                + (f": {str(detail)[:300]}" if detail else ""))
            error.status = response.status
            raise error
        return payload

    def assignment(self) -> Assignment | None:
        data = self._call("GET", "/v1/ota/device/assignment")
        update = data.get("update") if isinstance(data, dict) else None
        if update is None:
            return None
        try:
            return Assignment(int(update["campaign_id"]), str(update["target"]),
                              str(update["version"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise OtaDownloadError("the server's assignment is malformed") from exc

    def report(self, campaign_id: int, status: str, version: ImageVersion | str, *,
               detail: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"campaign_id": campaign_id, "status": status,
                                "version": str(version)}
        if detail is not None:
            body["detail"] = detail[:1000]
        result = self._call("POST", "/v1/ota/device/report", body)
        return result if isinstance(result, dict) else {}
