"""Key custody: where private keys live and how they sign.

The one keeper of secrets, between the pure core and the services:

* :mod:`iotsec.custody.base` -- the :class:`KeyStore` interface and the audited signers it
  hands out (every signature told to an ``on_use`` callback);
* :mod:`iotsec.custody.file_keys` -- CA and firmware keys as encrypted PKCS#8 files;
* :mod:`iotsec.custody.pkcs11`, :mod:`~iotsec.custody.pkcs11_image` -- the same keys inside a
  PKCS#11 token (loaded only when a home is configured for one);
* :mod:`iotsec.custody.file_keks`, :mod:`~iotsec.custody.pkcs11_kek`,
  :mod:`~iotsec.custody.keks` -- key-encryption keys in files and in the token, behind one
  ``active`` pointer;
* :mod:`iotsec.custody.home` -- which store a home uses, and opening it from the settings.

The core (:mod:`iotsec.pki`, :mod:`iotsec.firmware`, :mod:`iotsec.protect`) sees only the
:class:`~iotsec.pki.keys.Signer`, :class:`~iotsec.firmware.image_keys.ImageSigner` and
:class:`~iotsec.protect.kek.KeyWrapper` interfaces, never a store.
"""
