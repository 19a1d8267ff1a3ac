"""Access-control services: roles and bindings (:mod:`.roles`), decisions over the compiled
policy (:mod:`.decisions`), policy as code (:mod:`.policy`) and operator API tokens
(:mod:`.api_tokens`)."""
