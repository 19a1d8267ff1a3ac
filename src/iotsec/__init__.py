"""iotsec: a self-hosted IoT security control plane."""

__version__ = "0.1.0"
