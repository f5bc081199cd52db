"""Accuracy predictor: arch encoding, dataset building, models (MLP, ridge, GBM), selection."""

from onceflow.predictor.encoding import ArchEncoder
from onceflow.predictor.predictor import AccuracyPredictor, load_predictor, save_predictor

__all__ = ["AccuracyPredictor", "ArchEncoder", "load_predictor", "save_predictor"]
