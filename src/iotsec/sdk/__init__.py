"""Device-side SDK: what runs on (or next to) a device and talks to an iotsec server."""
