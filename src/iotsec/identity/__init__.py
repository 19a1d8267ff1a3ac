"""Device identity: the registry model (pure) and, later, device tokens."""
