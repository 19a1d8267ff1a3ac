"""Key custody: where private keys live and how they sign (file today, PKCS#11 next)."""

from iotsec.keys.base import KeyStore, KeyType, Signer

__all__ = ["KeyStore", "KeyType", "Signer"]
