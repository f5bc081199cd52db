"""DVC stage `publish`: upload every package under artifacts/ to the registry (publish.uri)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from onceflow import stage
from onceflow.config import load_params
from onceflow.metrics import parse_stage_args, publish_headline, write_metrics
from onceflow.registry import StoreOptions, open_store, publish_all


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="stages.publish", description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--artifacts", required=True, help="artifacts/<target>/<model-id>/ packages")
    ap.add_argument("--metrics", required=True)
    args = parse_stage_args(ap, argv)

    cfg = load_params(args.params).publish
    options = StoreOptions(
        endpoint_url=cfg.endpoint_url,
        region=cfg.region,
        max_attempts=cfg.max_attempts,
        connect_timeout_s=cfg.connect_timeout_s,
        read_timeout_s=cfg.read_timeout_s,
    )
    store = open_store(cfg.uri, options)
    results = publish_all(store, args.artifacts, retries=cfg.conflict_retries)
    details = {
        "registry": store.uri,
        "n_packages": len(results),
        "n_published": sum(r.status == "published" for r in results),
        "n_unchanged": sum(r.status == "unchanged" for r in results),
        "n_repaired": sum(r.status == "repaired" for r in results),
        "packages": [
            {"target": r.target, "model_id": r.model_id, "revision": r.revision, "uri": r.uri,
             "status": r.status, "uploaded": list(r.uploaded)}
            for r in results
        ],
    }  # fmt: skip
    write_metrics(args.metrics, publish_headline(details), details, args.details)
    stage.log.info("publish to %s: %d package(s)", store.uri, len(results))


if __name__ == "__main__":
    sys.exit(stage.run(main))
