"""Monitoring and incident response: the event chain's checkpoints and verification."""
