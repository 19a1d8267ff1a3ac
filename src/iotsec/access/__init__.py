"""Access control: MQTT topic semantics, roles and rules, and the decision engine."""
