"""Continuous detection: the rules in force (rules.py), the lease that makes one serving
process the detector (lease.py), the follower of the broker log and the EMQX hook events
(follow.py, sources.py), mitigation actions (actions.py), the loop ``iotsec serve`` runs
(loop.py) and its status (status.py)."""
