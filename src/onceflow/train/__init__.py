"""Supernet training: data pipeline, sandwich rule with in-place distillation, progressive
shrinking, checkpoints/resume and data-parallel training; plus the shared ``evaluate``."""

from onceflow.train.data import to_input
from onceflow.train.evaluation import evaluate, subnet_accuracy

__all__ = ["evaluate", "subnet_accuracy", "to_input"]
