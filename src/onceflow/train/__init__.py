"""Supernet training: data pipeline, sandwich rule with in-place distillation, progressive
shrinking, checkpoints/resume and data-parallel training. (Inputs and accuracy, shared with the
stages above training: :mod:`onceflow.inputs`, :mod:`onceflow.accuracy`.)"""
