"""Prefect flows that drive the DVC pipeline (deployment definitions live in flows/deploy.py)."""
