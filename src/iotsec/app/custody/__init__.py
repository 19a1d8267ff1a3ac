"""Key-custody services: keys in custody and secrets encrypted in the store (:mod:`.keys`), and
key-encryption key rotation (:mod:`.kek_rotation`)."""
