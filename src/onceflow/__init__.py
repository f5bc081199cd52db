"""onceflow: Once-for-All NAS as MLOps software."""

__version__ = "0.1.0"
