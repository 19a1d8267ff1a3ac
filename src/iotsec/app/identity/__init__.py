"""Identity services: the device registry (:mod:`.devices`), its per-process cache for
decisions (:mod:`.registry_cache`), device lifecycle changes (:mod:`.lifecycle`) and device
tokens (:mod:`.device_tokens`)."""
