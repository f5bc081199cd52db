"""Jobs over several machines: the first node publishes the job, the others join it.

The DVC stage ``train_supernet`` is the job's first node: it hosts torch's c10d rendezvous
store at the endpoint (``ONCEFLOW_RDZV_ENDPOINT``, else params ``train.rdzv_endpoint``) and
publishes the job there -- its run id, node range, and the digests of its training code, its
training params and its prepared data. Every other machine runs ``onceflow train join
--endpoint HOST:PORT`` in a checkout of the same revision with the prepared data pulled from
the DVC remote: it reads that record, refuses with one line when a digest differs (before it
takes part in anything, so the job goes on), and otherwise starts its ranks in the job. Only
the first node writes outputs, checkpoints and metrics.

The store lives in the first node's launcher: a job survives losing any other node, not the
first one (c10d's store has no replica; rerunning the stage resumes from the checkpoints).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from onceflow.config import Params, TrainConfig, check_rdzv_endpoint, load_params
from onceflow.data.prepared import data_identity, load_prepared
from onceflow.errors import ConfigError, OnceflowError
from onceflow.io import sha256_json
from onceflow.train.launch import Rendezvous, launch
from onceflow.train.resume import code_digest

log = logging.getLogger(__name__)

ENDPOINT_ENV = "ONCEFLOW_RDZV_ENDPOINT"
JOB_KEY = "onceflow/job"  # the first node's job record in the rendezvous store
DIGESTS = ("code", "params", "data")


class NodeRefused(ConfigError):
    """This machine's code, params or data differ from the first node's: it may not join."""


def rdzv_endpoint(cfg: TrainConfig) -> str | None:
    """The job's endpoint: ``ONCEFLOW_RDZV_ENDPOINT`` if set, else params train.rdzv_endpoint."""
    env = os.environ.get(ENDPOINT_ENV, "").strip()
    if not env:
        return cfg.rdzv_endpoint
    try:
        check_rdzv_endpoint(env)
    except ValueError as err:
        raise ConfigError(f"{ENDPOINT_ENV}: {err}") from None
    return env


def job_digests(params: Params, data_dir: str | Path) -> dict[str, str]:
    """What a node must share with the first node: training code (and torch), the params that
    training reads (not the endpoint, which may come from the environment) and the prepared
    data's content."""
    train = params.train.model_dump(mode="json", exclude={"rdzv_endpoint"})
    sections = {"base": params.base.model_dump(mode="json"), "train": train,
                "supernet": params.supernet.model_dump(mode="json")}  # fmt: skip
    data = load_prepared(data_dir, mmap=True)
    return {
        "code": code_digest()[:16],
        "params": sha256_json(sections)[:16],
        "data": data_identity(data)[:16],
    }


def _rendezvous(cfg: TrainConfig) -> Rendezvous:
    lo, hi = cfg.node_range
    return Rendezvous(
        min_nodes=lo,
        max_nodes=hi,
        max_restarts=cfg.max_restarts,
        join_timeout_s=cfg.rdzv_timeout_s,
        last_call_s=cfg.rdzv_last_call_s,
    )


@contextmanager
def first_node(params: Params, data_dir: str | Path) -> Iterator[Rendezvous]:
    """This machine as the job's first node. One node: a local rendezvous. Several: host the
    rendezvous store at the endpoint and publish the job there while the block runs."""
    rdzv = _rendezvous(params.train)
    if rdzv.max_nodes == 1:
        yield rdzv
        return
    endpoint = rdzv_endpoint(params.train)
    if endpoint is None:
        raise ConfigError(
            f"params.yaml train.nodes: {params.train.nodes} needs a rendezvous endpoint: set "
            f"{ENDPOINT_ENV}=HOST:PORT (or train.rdzv_endpoint), HOST being this machine"
        )
    import uuid

    from torch.distributed import TCPStore

    host, port = check_rdzv_endpoint(endpoint)
    try:  # the rendezvous handler's own store (multi-tenant, same port) shares this server
        store = TCPStore(host, port, is_master=True, multi_tenant=True, wait_for_workers=False,
                         timeout=timedelta(seconds=60))  # fmt: skip
    except (RuntimeError, ValueError) as err:
        raise OnceflowError(
            f"cannot host the rendezvous at {endpoint} ({' '.join(str(err).split())[:160]}): "
            f"is the port free and {host} this machine? (set {ENDPOINT_ENV})"
        ) from None
    rdzv = replace(rdzv, endpoint=endpoint, run_id=uuid.uuid4().hex)
    record = {"run_id": rdzv.run_id, "nodes": [rdzv.min_nodes, rdzv.max_nodes],
              "digests": job_digests(params, data_dir)}  # fmt: skip
    store.set(JOB_KEY, json.dumps(record))
    log.info(
        "first node of a job of %s: join the others with `onceflow train join --endpoint %s`",
        rdzv.describe(), endpoint,
    )  # fmt: skip
    try:
        yield rdzv
    finally:
        del store


def read_job(endpoint: str, timeout_s: int) -> dict[str, Any]:
    """The job record the first node published at ``endpoint`` (waits up to ``timeout_s``)."""
    from torch.distributed import TCPStore

    host, port = check_rdzv_endpoint(endpoint)
    try:
        store = TCPStore(host, port, is_master=False, timeout=timedelta(seconds=timeout_s))
        raw = store.get(JOB_KEY)
        job = json.loads(raw)
        if not isinstance(job, dict) or not {"run_id", "nodes", "digests"} <= job.keys():
            raise ValueError("not an onceflow job record")
    except (RuntimeError, TimeoutError, ValueError) as err:
        first = " ".join(str(err).split())[:160]
        raise OnceflowError(
            f"no onceflow job answers at {endpoint} within {timeout_s} s ({first}): start the "
            "DVC stage train_supernet with train.nodes > 1 on the first node, then join"
        ) from None
    return job


def refusal(endpoint: str, ours: dict[str, str], theirs: dict[str, str]) -> str | None:
    """Why a node with digests ``ours`` may not join the first node's job (None: it may)."""
    differ = [k for k in DIGESTS if ours.get(k) != theirs.get(k)]
    if not differ:
        return None
    what = ", ".join(f"{k} digest {ours.get(k)} (first node: {theirs.get(k)})" for k in differ)
    return (
        f"refused to join the job at {endpoint}: this node's {what} differ(s); check out the "
        "first node's revision and params.yaml, then `dvc pull data/prepared`"
    )


def join_job(endpoint: str, params_path: str | Path, data_dir: str | Path) -> None:
    """Run this machine's ranks (``train.processes``) in the job whose first node hosts
    ``endpoint``; refuse (:class:`NodeRefused`) if code, params or data differ from its."""
    try:
        check_rdzv_endpoint(endpoint)
    except ValueError as err:
        raise ConfigError(f"--endpoint: {err}") from None
    params = load_params(params_path)
    ours = job_digests(params, data_dir)
    job = read_job(endpoint, params.train.rdzv_timeout_s)
    why = refusal(endpoint, ours, job["digests"])
    if why is not None:
        raise NodeRefused(why)
    lo, hi = (int(n) for n in job["nodes"])
    rdzv = replace(_rendezvous(params.train), endpoint=endpoint, run_id=str(job["run_id"]),
                   min_nodes=lo, max_nodes=hi, first_node=False)  # fmt: skip
    argv = ["--params", str(params_path), "--data", str(data_dir)]
    launch(params.train.processes, "onceflow.train.joined", argv, rdzv=rdzv)
    log.info("joined job at %s finished", endpoint)
