"""Fleet audit: checks computed from iotsec's own state (certificates, keys, policies, broker
configuration, events, firmware), the self-hosted equivalent of a cloud device audit."""
