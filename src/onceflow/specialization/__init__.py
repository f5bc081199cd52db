"""Does specialization pay? Each target's picks measured on every other target.

Public API::

    TargetPicks, cross_target(targets, accuracy) -> (headline, details)   # pure, matrix.py
    accuracy_under_target(...)                                            # accuracy.py
    specialization_png(details, title) -> bytes, plot_rows(details) -> CSV  # plot.py
"""

from onceflow.specialization.matrix import Slot, TargetPicks, cross_target, rank_correlation

__all__ = ["Slot", "TargetPicks", "cross_target", "rank_correlation"]
