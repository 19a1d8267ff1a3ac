"""The one error hierarchy of iotsec.

Every error says what was wrong (``str(err)``) and what to do about it (``err.hint``).
The CLI prints both on one line and exits 1; the API answers RFC 9457 problem+json
with ``err.status``. Foreign exceptions are translated at the boundary with
``raise ... from exc`` and never leak secrets: messages name objects, not key material.

The classes live in one module per domain and are all importable from here. The root of
the hierarchy (:mod:`iotsec.errors.base`) is loaded with the package; each other domain's
module when one of its names is first asked for (:data:`_DOMAINS` says which is where; a
test keeps it equal to the modules' ``__all__``), so that a command does not load the
errors of every other domain at start-up.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Final

from iotsec.errors.base import *  # noqa: F403
from iotsec.errors.base import __all__ as _base_names

if TYPE_CHECKING:
    from iotsec.errors.audit import *  # noqa: F403
    from iotsec.errors.backup import *  # noqa: F403
    from iotsec.errors.broker import *  # noqa: F403
    from iotsec.errors.ca import *  # noqa: F403
    from iotsec.errors.coap import *  # noqa: F403
    from iotsec.errors.detect import *  # noqa: F403
    from iotsec.errors.enrol import *  # noqa: F403
    from iotsec.errors.est import *  # noqa: F403
    from iotsec.errors.firmware import *  # noqa: F403
    from iotsec.errors.keys import *  # noqa: F403
    from iotsec.errors.netseg import *  # noqa: F403
    from iotsec.errors.ocsp import *  # noqa: F403
    from iotsec.errors.ota import *  # noqa: F403
    from iotsec.errors.profiles import *  # noqa: F403
    from iotsec.errors.protect import *  # noqa: F403
    from iotsec.errors.scan import *  # noqa: F403
    from iotsec.errors.tokens import *  # noqa: F403

#: The name of each domain module of the package (but the root) and the names it exports.
_DOMAINS: Final[dict[str, tuple[str, ...]]] = {
    "audit": ("AttestationError", "AuditBrokerDirError", "AuditError", "AuditOptionError",
              "ComplianceError", "ScanReportError", "UnknownFrameworkError",
              "UnknownProvisionError"),
    "backup": ("BackupAuthenticationError", "BackupError", "BackupFormatError",
               "BackupIntegrityError", "BackupTruncatedError", "MigrationError",
               "MigrationTargetError", "RestoreTargetError"),
    "broker": ("BrokerConfigError", "BrokerCrlError", "BrokerError", "BrokerProcessError",
               "BrokerReloadError", "BrokerValidationError", "EmqxRequestError",
               "MqttConnectError", "MqttError", "MqttNotAuthorizedError", "MqttTimeoutError"),
    "ca": ("CaImportError", "CaStateError", "OfflineKeyError"),
    "coap": ("CoapClientError", "CoapGatewayError", "CoapMessageError", "CoapRequestError",
             "OscoreError", "OscoreReplayError"),
    "detect": ("DetectionRuleError",),
    "enrol": ("EnrolmentAuthError", "EnrolmentForbiddenError"),
    "est": ("EnrolmentPending", "EstError"),
    "firmware": ("DuplicateTlvError", "FirmwareError", "FirmwareKeyError", "ImageHashError",
                 "ImageHeaderError", "ImageLayoutError", "ImageMagicError", "ImageReadError",
                 "ImageSignatureError", "ImageTooLargeError", "ImageTruncatedError",
                 "MissingHashError", "MissingSignatureError", "NoTrustedKeyError",
                 "SecurityCounterError", "TlvAreaError", "UnknownTlvError",
                 "UnsupportedImageError", "UntrustedKeyError", "VersionDowngradeError"),
    "keys": ("EncryptedKeyError", "KekRotationError", "KeyTypeMismatchError", "Pkcs11Error",
             "Pkcs11KeyNotFoundError", "Pkcs11ModuleError", "Pkcs11PinError",
             "Pkcs11TokenNotFoundError", "RetiredKekError"),
    "netseg": ("NetsegError", "NetsegPolicyError", "NftError"),
    "ocsp": ("OcspRequestError", "OcspResponseError", "OcspRotationBusyError",
             "OcspUnavailableError"),
    "ota": ("CampaignError", "CampaignStateError", "DeviceRollbackError",
            "HardwareMismatchError", "OtaDownloadError", "OtaEndlessDataError", "OtaError",
            "OtaReportError", "OtaRepositoryError", "OtaTargetError", "ReleaseDowngradeError",
            "TufExpiredError", "TufMetadataError", "TufRollbackError", "TufThresholdError"),
    "profiles": ("ProfileRefusedError",),
    "protect": ("CborError", "DataKeyUnwrapError", "DataProtectionError", "KekUnlockError",
                "PayloadAlgorithmError", "PayloadAuthenticationError", "PayloadError",
                "PayloadKeyError", "PayloadMalformedError", "PayloadReplayError",
                "PayloadTooOldError", "PayloadUnknownKeyError", "ProtectError",
                "RecordAuthenticationError", "RecordFormatError", "StreamChunkError",
                "StreamFormatError", "StreamHeaderError", "StreamTruncatedError",
                "UnknownKekError"),
    "scan": ("ScanError", "ScanResolveError", "ScanScopeError", "ScanTargetError",
             "ScanToolError"),
    "tokens": ("TokenAlgorithmError", "TokenAudienceError", "TokenClaimsError",
               "TokenDeviceError", "TokenError", "TokenExpiredError", "TokenKeyExpiredError",
               "TokenKeyRevokedError", "TokenMalformedError", "TokenNotYetValidError",
               "TokenReplayError", "TokenSignatureError", "TokenUnknownKeyError"),
}

_WHERE: Final = {name: domain for domain, names in _DOMAINS.items() for name in names}

__all__ = sorted([*_base_names, *_WHERE])

if not TYPE_CHECKING:  # the type checker reads the imports above, and sees no other name

    def __getattr__(name: str) -> object:
        """The error class ``name`` of a domain module, which is imported on first need."""
        domain = _WHERE.get(name)
        if domain is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        module = importlib.import_module(f"{__name__}.{domain}")
        for exported in _DOMAINS[domain]:
            globals()[exported] = getattr(module, exported)
        return getattr(module, name)
