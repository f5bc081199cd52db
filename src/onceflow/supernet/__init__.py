"""The elastic supernet: search space, static layers, elastic ops, extraction, BN recalibration.

Public API (the contract other packages code against)::

    SearchSpace, Arch, Dimension, LayerSpec, build_layer           # space + static layers
    Supernet, recalibrate_bn, load_supernet, save_supernet         # the network
"""

from onceflow.supernet.arch import Arch
from onceflow.supernet.geometry import make_divisible
from onceflow.supernet.layers import build_layer
from onceflow.supernet.space import Dimension, SearchSpace
from onceflow.supernet.specs import LayerSpec
from onceflow.supernet.supernet import Supernet, load_supernet, recalibrate_bn, save_supernet

__all__ = [
    "Arch",
    "Dimension",
    "LayerSpec",
    "SearchSpace",
    "Supernet",
    "build_layer",
    "load_supernet",
    "make_divisible",
    "recalibrate_bn",
    "save_supernet",
]
