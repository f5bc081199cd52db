"""Latency look-up tables: one measured entry per unique static layer the space can produce.

The table is keyed by :class:`~onceflow.supernet.specs.LayerSpec` (everything that determines
a layer's static op), so any arch's latency estimate is a sum of lookups along
``space.layer_specs(arch)``. ``overhead_ms`` is the latency of a trivial graph under the same
backend and protocol: the fixed cost of one inference call, which every isolated entry pays
once but a whole network pays only once in total.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from onceflow.errors import ConfigError
from onceflow.latency.backends.base import Backend
from onceflow.latency.protocol import LatencyStats, MeasureProtocol
from onceflow.supernet.space import SearchSpace
from onceflow.supernet.specs import LayerSpec

log = logging.getLogger(__name__)

LUT_SCHEMA_VERSION = 1
LUT_FILE = "lut.json"


def spec_key(spec: LayerSpec) -> str:
    """Stable readable key, e.g. ``block:in_res=28,in_ch=16,...`` (all fields, in order)."""
    d = spec.to_json()
    kind = d.pop("kind")
    return f"{kind}:" + ",".join(
        f"{k}={int(v) if isinstance(v, bool) else v}" for k, v in d.items()
    )


def input_shape(spec: LayerSpec, batch_size: int) -> tuple[int, int, int, int]:
    """NCHW input of the layer ``spec`` at ``batch_size``."""
    return (batch_size, spec.in_ch, spec.in_res, spec.in_res)


class _Trivial(nn.Module):
    """The smallest graph a runtime executes: one elementwise op on a 1-element tensor."""

    def forward(self, x):  # noqa: ANN001, ANN201
        return x.relu()


@dataclass
class Lut:
    """Measured per-layer latencies (ms) for one target, plus how they were measured."""

    entries: dict[LayerSpec, LatencyStats]
    overhead: LatencyStats
    meta: dict[str, Any] = field(default_factory=dict)  # target, environment, protocol, space...

    def latency(self, spec: LayerSpec) -> float:
        try:
            return self.entries[spec].median
        except KeyError:
            raise ConfigError(
                f"latency table has no entry for {spec_key(spec)}: it was built for another "
                "search space; rebuild it (dvc repro latency_table)"
            ) from None

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": LUT_SCHEMA_VERSION,
            **self.meta,
            "overhead": self.overhead.to_json(),
            "entries": [
                {
                    "key": spec_key(s),
                    "spec": s.to_json(),
                    "latency_ms": st.median,
                    "stats": st.to_json(),
                }
                for s, st in self.entries.items()
            ],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any], source: str = LUT_FILE) -> Lut:
        if d.get("schema_version") != LUT_SCHEMA_VERSION:
            raise ConfigError(
                f"{source}: schema_version {d.get('schema_version')!r} is not "
                f"{LUT_SCHEMA_VERSION}; rebuild the table (dvc repro latency_table)"
            )
        entries = {
            LayerSpec.from_json(e["spec"]): LatencyStats.from_json(e["stats"]) for e in d["entries"]
        }
        meta = {k: v for k, v in d.items() if k not in ("schema_version", "overhead", "entries")}
        return cls(entries=entries, overhead=LatencyStats.from_json(d["overhead"]), meta=meta)


def lut_models(
    specs: Sequence[LayerSpec], build_layer: Callable[[LayerSpec], nn.Module], batch_size: int
) -> list[tuple[nn.Module, tuple[int, ...]]]:
    """What a LUT times, in order: the trivial call-overhead graph, then one layer per spec."""
    models: list[tuple[nn.Module, tuple[int, ...]]] = [(_Trivial(), (1, 1, 1, 1))]
    models += [(build_layer(s).eval(), input_shape(s, batch_size)) for s in specs]
    return models


def lut_from_stats(specs: Sequence[LayerSpec], stats: Sequence[LatencyStats]) -> Lut:
    """The table from stats in :func:`lut_models` order (overhead first)."""
    if len(stats) != len(specs) + 1:
        raise ValueError(f"need {len(specs) + 1} stats (overhead + specs), got {len(stats)}")
    return Lut(entries=dict(zip(specs, stats[1:], strict=True)), overhead=stats[0])


def build_lut(
    specs: Sequence[LayerSpec],
    build_layer: Callable[[LayerSpec], nn.Module],
    backend: Backend,
    protocol: MeasureProtocol,
    batch_size: int,
) -> tuple[Lut, float]:
    """Measure every spec (interleaved, one protocol) and the call overhead on its own.

    Returns the table and the wall-clock seconds it took (export + compile + timing). The
    latency_table stage instead times the LUT together with its validation subnets
    (:func:`onceflow.latency.table.build_latency_table`).
    """
    t0 = time.perf_counter()
    log.info("LUT: timing %d layer signatures + call overhead on %s", len(specs), backend.name)
    stats = backend.measure_many(lut_models(specs, build_layer, batch_size), protocol)
    lut = lut_from_stats(specs, stats)
    return lut, time.perf_counter() - t0


def check_coverage(lut: Lut, space: SearchSpace) -> None:
    """Raise ConfigError unless every spec the space can produce has an entry."""
    missing = [s for s in space.unique_layer_specs() if s not in lut.entries]
    if missing:
        raise ConfigError(
            f"latency table lacks {len(missing)} of the space's layer signatures "
            f"(first: {spec_key(missing[0])}); rebuild it for this space (dvc repro latency_table)"
        )
