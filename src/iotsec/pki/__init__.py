"""Device PKI: the pure core of certificate authority work (no I/O)."""
