"""mailward: a Kubernetes operator that makes mail domains secure by standard."""

__version__ = "0.1.0"
