"""Key-custody services: keys in custody and secrets sealed in the store (:mod:`.keys`), and
key-encryption key rotation (:mod:`.kek_rotation`)."""
