"""Data protection: end-to-end payloads (COSE) and encryption at rest (envelope encryption).

* :mod:`iotsec.protect.payload` -- ``seal``/``open`` of COSE_Encrypt0 and COSE_Sign1
  messages between a device and an application, with replay protection;
* :mod:`iotsec.protect.cose` -- those messages taken apart (layout, header labels, limits);
* :mod:`iotsec.protect.pairing` -- pair keys (ECDH + HKDF-SHA256) and signing keys;
* :mod:`iotsec.protect.atrest` -- streaming file encryption and encrypted records;
* :mod:`iotsec.protect.kek` -- the key-encryption key interface and the software KEK.
"""

from iotsec.protect.atrest import (
    decrypt_record,
    decrypt_stream,
    encrypt_record,
    encrypt_stream,
)
from iotsec.protect.kek import FileKek, KekRing, KeyWrapper
from iotsec.protect.pairing import (
    Algorithm,
    PairContext,
    PairKey,
    SigningKey,
    VerifyingKey,
    establish,
    new_salt,
)
from iotsec.protect.payload import Keyring, Opened, Sender, open, seal
from iotsec.protect.replay import ReplayWindow, ReplayWindows

__all__ = [
    "Algorithm", "FileKek", "KekRing", "KeyWrapper", "Keyring", "Opened", "PairContext", "PairKey",
    "ReplayWindow", "ReplayWindows", "Sender", "SigningKey", "VerifyingKey", "decrypt_record",
    "decrypt_stream", "encrypt_record", "encrypt_stream", "establish", "new_salt", "open", "seal"
]
