"""The accuracy predictor the search uses: features of encoded archs -> predicted accuracy.

Saved as ``<dir>/predictor.json`` (model kind, space layout, sha256 of the weights, metrics) and
``<dir>/model.npz`` (arrays only; loaded with ``allow_pickle=False``).
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from onceflow import artifacts
from onceflow.errors import ConfigError, DataError
from onceflow.io import write_bytes_atomic, write_json_atomic
from onceflow.predictor.encoding import ArchEncoder
from onceflow.predictor.models import Model, model_from_state, state_digest
from onceflow.supernet.space import SearchSpace

PREDICTOR_FILE = "predictor.json"
WEIGHTS_FILE = "model.npz"
FORMAT_VERSION = 1


class AccuracyPredictor:
    """Predicts top-1 accuracy (in [0, 1]) of batches of encoded archs."""

    def __init__(self, encoder: ArchEncoder, model: Model) -> None:
        self.encoder, self.model = encoder, model

    @property
    def kind(self) -> str:
        return self.model.kind

    def predict(self, encoded: np.ndarray) -> np.ndarray:
        """(N,) predicted accuracy for an (N, D) int64 choice-index matrix."""
        return self.model.predict(self.encoder.features(encoded))

    __call__ = predict


def save_predictor(
    predictor: AccuracyPredictor, directory: str | os.PathLike[str], extra: dict[str, Any]
) -> None:
    """Write the predictor into ``directory`` (which the caller typically fills atomically)."""
    d = Path(directory)
    state = predictor.model.state()
    buf = io.BytesIO()
    np.savez(buf, **state)
    write_bytes_atomic(d / WEIGHTS_FILE, buf.getvalue())
    write_json_atomic(
        d / PREDICTOR_FILE,
        {
            "format_version": FORMAT_VERSION,
            "model": predictor.kind,
            "layout": predictor.encoder.layout(),
            "sha256": state_digest(state),
            **extra,
        },
    )


def load_predictor(directory: str | os.PathLike[str], space: SearchSpace) -> AccuracyPredictor:
    """Load a saved predictor for ``space``; refuses a different space or altered weights."""
    d = Path(directory)
    meta_path = d / PREDICTOR_FILE
    if not meta_path.is_file():
        raise DataError(f"{meta_path}: no predictor here; run `dvc repro predictor` first")
    meta = artifacts.predictor_meta(meta_path)  # checked: one line naming the file and stage
    if meta.get("format_version") != FORMAT_VERSION:
        raise ConfigError(
            f"{meta_path}: format_version {meta.get('format_version')!r} unsupported; "
            f"{artifacts.rebuild('predictor')}"
        )
    try:
        encoder = ArchEncoder.from_layout(space, meta["layout"])
    except ConfigError as err:  # another space: name the file
        raise ConfigError(f"{meta_path}: {err}") from None
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
        raise artifacts.field_error(meta_path, err, "predictor") from None
    weights = d / WEIGHTS_FILE
    try:
        with np.load(weights, allow_pickle=False) as z:
            state = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise artifacts.field_error(weights, err, "predictor") from None
    if state_digest(state) != meta.get("sha256"):
        raise DataError(
            f"{d / WEIGHTS_FILE}: sha256 differs from {meta_path}; rebuild the predictor"
        )
    try:
        return AccuracyPredictor(encoder, model_from_state(meta["model"], state))
    except ConfigError as err:
        raise ConfigError(f"{meta_path}: {err}") from None
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
        raise artifacts.field_error(meta_path, err, "predictor") from None
