"""Managed DKIM keys: generation and record text (keys.py), the staged rotation as a pure
state machine (machine.py). The dkim part (parts/dkim.py) observes and acts."""
