"""Tiny training configs for fast tests, and a simulated kill."""

from __future__ import annotations

from collections.abc import Callable

from onceflow.config import PhaseConfig, TrainConfig

TINY_TRAIN = {
    "phases": [{"name": "all", "epochs": 2, "lr": 0.1, "warmup_epochs": 0.2}],
    "batch_size": 40,
    "n_random": 1,
    "epoch_eval_images": 60,
    "bn_calib_images": 120,
    "eval_batch_size": 60,
    "checkpoint_every_steps": 3,
    "hflip": False,  # the synthetic classes are patch positions: a flip changes the class
    "crop_padding": 0,
}


def tiny_train(**over) -> TrainConfig:
    cfg = dict(TINY_TRAIN, **over)
    cfg["phases"] = [PhaseConfig(**p) for p in cfg["phases"]]
    return TrainConfig(**cfg)


def kill_after(step: int) -> Callable[[int], bool]:
    """A ``should_stop`` that ends the run after global step ``step``, as a kill would (what
    was checkpointed by then stays; the rest is lost)."""
    return lambda global_step: global_step >= step
