"""Model registry on object storage (``file://`` or ``s3://``): publish, list, show, pull.

Layout under the registry root::

    <target>/index.json                              # every revision of every model, in order
    <target>/<model-id>/<revision>/model.onnx        # + model.plan for TensorRT targets
    <target>/<model-id>/<revision>/README.md
    <target>/<model-id>/<revision>/manifest.json     # sha256 + size of every other file

A revision is named by its manifest's sha256 (first 16 hex digits); its objects are written
once, before the index names them, and never change. Python API::

    store = open_store("s3://bucket/models")          # or "file://registry"
    publish_package(store, "artifacts/ort-cpu/r28-0123abcd4567")
    list_models(store, "ort-cpu")
    pull_model(store, "ort-cpu", "deploy/", max_latency_ms=2.0)
"""

from onceflow.registry.index import IndexEntry, select
from onceflow.registry.publish import PublishResult, publish_all, publish_package, update_index
from onceflow.registry.pull import (
    PullResult,
    fetch_manifest,
    find_model,
    list_models,
    list_targets,
    pull_model,
)
from onceflow.registry.store import Store, StoreOptions, open_store, parse_uri
from onceflow.uri import redact

__all__ = [
    "IndexEntry",
    "PublishResult",
    "PullResult",
    "Store",
    "StoreOptions",
    "fetch_manifest",
    "find_model",
    "list_models",
    "list_targets",
    "open_store",
    "parse_uri",
    "publish_all",
    "publish_package",
    "pull_model",
    "redact",
    "select",
    "update_index",
]
