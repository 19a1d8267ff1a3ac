"""Network segmentation: zone policy as code, compiled to nftables.

- ``source``: reading the policy file safely (size cap, safe YAML, line numbers);
- ``model``: zones, rules and firewall settings as typed values;
- ``policy``: parsing and validating a policy file (``parse_policy``), against the
  document ``schema``, with every ``problems`` entry on its line;
- ``services``: named services (mqtt, mqtts, ssh, coap...) and what they imply;
- ``findings``: what a segmentation review flags (``review``);
- ``decide``: the ``check`` decision (``Decider``, ``Flow``);
- ``nftables``: the compiler (``compile_nftables``);
- ``interp``: an interpreter of the emitted nftables subset, for equivalence tests.
"""
