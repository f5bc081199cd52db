"""Deployable packages of searched subnets: ONNX export, parity check, manifest, model card.

Importing this package is cheap (no torch); the torch-heavy parts live in ``export``,
``parity`` and ``build`` and are imported where used.
"""
