"""Data protection: end-to-end payloads (COSE) and encryption at rest (envelope encryption).

* :mod:`iotsec.protect.payload` -- ``seal``/``open`` of COSE_Encrypt0 and COSE_Sign1
  messages between a device and an application, with replay protection;
* :mod:`iotsec.protect.cose` -- those messages taken apart (layout, header labels, limits);
* :mod:`iotsec.protect.pairing` -- pair keys (ECDH + HKDF-SHA256) and signing keys;
* :mod:`iotsec.protect.atrest` -- streaming file encryption and encrypted records;
* :mod:`iotsec.protect.kek` -- the key-encryption key interface and the software KEK.

Import from the module that defines a name: this package imports none of them, so that
``iotsec data encrypt`` (at rest) does not load the COSE, pairing and payload code.
"""
