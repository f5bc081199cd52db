"""Hardware latency tables: backends, measurement protocol, LUT, calibrated estimator.

Public API::

    make_backend(target) -> Backend            # .available(), .measure(model, shape, protocol)
    MeasureProtocol, LatencyStats
    build_latency_table(...) -> TableResult    # the table (latency.stage: the whole stage)
    LatencyEstimator, load_estimator(dir, space)  # .predict(encoded) / .predict_arch(arch), ms
    MeasuredEstimator, fit_measured             # a model fit on whole measured subnets
    fit_calibration, fidelity
    imported / roundtrip: export subnets for a device that is not attached, import its timings
"""

from onceflow.latency.backends import Backend, make_backend
from onceflow.latency.calibration import Calibration, fit_calibration
from onceflow.latency.estimator import LatencyEstimator, load_estimator
from onceflow.latency.fidelity import fidelity
from onceflow.latency.lut import Lut, build_lut
from onceflow.latency.measured import MeasuredEstimator, fit_measured
from onceflow.latency.protocol import LatencyStats, MeasureProtocol, measure_interleaved
from onceflow.latency.table import TableResult, build_latency_table, protocol_from_config

__all__ = [
    "Backend",
    "Calibration",
    "LatencyEstimator",
    "LatencyStats",
    "Lut",
    "MeasureProtocol",
    "MeasuredEstimator",
    "TableResult",
    "build_latency_table",
    "build_lut",
    "fidelity",
    "fit_calibration",
    "fit_measured",
    "load_estimator",
    "make_backend",
    "measure_interleaved",
    "protocol_from_config",
]
