"""Wire models: the one JSON shape of each resource, for the REST API's responses and the
CLI's ``--json`` output alike.

Each model is a pydantic model with a ``from_domain(...)`` named constructor that takes the
service layer's record; the API returns the model (FastAPI serialises it and publishes its
schema), the CLI prints ``model.model_dump(mode="json")``. One module per area: ``identity``
(devices, certificates, device keys and tokens), ``access`` (decisions, roles, groups,
policy, API tokens, events), ``ota`` (releases, campaigns, the update repository),
``records`` (attestations, keys in custody). This package imports no web framework, so the
CLI's start-up never pays for one.
"""
