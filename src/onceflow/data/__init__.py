"""Data sources, splits, the validation gate and the prepared-data format."""

from onceflow.data.prepared import Meta, PreparedData, Split, load_prepared, normalize

__all__ = ["Meta", "PreparedData", "Split", "load_prepared", "normalize"]
