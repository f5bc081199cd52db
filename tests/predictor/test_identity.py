"""What the predictor's rows and labels depend on: the CSV is keyed by the supernet weights,
the prepared data's content and every measurement setting; the encoder, the selection and the
label target behave as documented."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from onceflow.config import PredictorConfig
from onceflow.predictor.dataset import Measurement, MeasureSettings, build_dataset, sample_archs
from onceflow.predictor.encoding import ArchEncoder
from onceflow.predictor.fit import select_and_fit
from onceflow.predictor.pipeline import labels, measurement_context
from onceflow.supernet import SearchSpace
from onceflow.supernet.supernet import load_supernet
from tests.conftest import tiny_supernet_config, write_prepared
from tests.predictor.conftest import write_supernet


def _measure_all(archs, csv: Path, context: str) -> int:  # noqa: ANN001
    calls = []

    def measure(a):  # noqa: ANN001, ANN202
        calls.append(a)
        return Measurement(0.5, 0.5, 0.5, 1.0, 1.0, 1.0)

    build_dataset(archs, measure, csv, context)
    return len(calls)


def test_rows_do_not_survive_new_data_weights_or_settings(
    tmp_path: Path, tiny_space: SearchSpace
) -> None:
    net_dir = write_supernet(tmp_path / "supernet", tiny_space)
    data = write_prepared(tmp_path / "data", n_per_class=4)
    net, s = load_supernet(net_dir), MeasureSettings(20, 10, 8, 0, None, 0)
    archs = sample_archs(tiny_space, 5, seed=0)
    csv = tmp_path / "arch_acc.csv"
    ctx = measurement_context(net_dir, net, data, s)
    assert _measure_all(archs, csv, ctx) == 5
    assert _measure_all(archs, csv, measurement_context(net_dir, net, data, s)) == 0  # resumed

    # Same shapes, same meta.json, different pixels: every row is measured again.
    img = np.load(data / "val_images.npy")
    np.save(data / "val_images.npy", 255 - img)
    ctx2 = measurement_context(net_dir, net, data, s)
    assert ctx2 != ctx and _measure_all(archs, csv, ctx2) == 5
    # prepare's content hash, when meta.json has one, is used as it is.
    meta = json.loads((data / "meta.json").read_text())
    (data / "meta.json").write_text(json.dumps({**meta, "content_sha256": "ab" * 32}))
    ctx3 = measurement_context(net_dir, net, data, s)
    assert ctx3 != ctx2 and _measure_all(archs, csv, ctx3) == 5
    # Other weights, another measurement setting.
    write_supernet(net_dir, tiny_space, seed=1)
    ctx4 = measurement_context(net_dir, net, data, s)
    assert ctx4 != ctx3 and _measure_all(archs, csv, ctx4) == 5
    s2 = MeasureSettings(20, 10, 8, 0, calib_batch_size=4, retest=0)
    assert measurement_context(net_dir, net, data, s2) != ctx4


def test_one_resolution_skips_the_crossing() -> None:
    cfg = tiny_supernet_config().model_copy(update={"resolutions": [16]})
    one = SearchSpace(cfg, in_channels=1, n_classes=10, image_size=28)
    enc = ArchEncoder(one, per_resolution=True)
    assert not enc.per_resolution and enc.n_features == enc.n_onehot + 2
    x = one.encode_batch([one.min_arch(), one.max_arch()])
    assert enc.features(x).shape == (2, enc.n_features)
    assert ArchEncoder.from_layout(one, enc.layout()).n_features == enc.n_features


def test_selection_cross_validates_over_every_sample(default_space: SearchSpace) -> None:
    """The k-fold tau is computed over all n samples: with the held-out split left out of the
    folds, a model could not be chosen on a sample set where only the held-out rows carry a
    signal -- here they do, and the choice sees it."""
    rng = np.random.default_rng(0)
    x = default_space.encode_batch([default_space.sample(rng) for _ in range(60)])
    X = ArchEncoder(default_space, derived=False).features(x)
    y = X @ np.random.default_rng(1).normal(0, 0.01, X.shape[1]) + 0.8
    p = PredictorConfig(mlp_epochs=50, mlp_hidden=16, gbm_iterations=20, k_folds=3)
    _, sel = select_and_fit(X, y, ["ridge", "gbm"], p=p, seed=0)
    assert sel.n_train + sel.n_holdout == 60 and sel.curve == {"ridge": [], "gbm": []}
    assert len(sel.hold_index) == sel.n_holdout and set(sel.hold_pred) == {"ridge", "gbm"}


def test_loss_target_maps_the_loss_onto_accuracy() -> None:
    ms = [
        Measurement(a, a, a, 2.0 - 2 * a, 2.1 - 2 * a, 1.9 - 2 * a, a, 2.0 - 2 * a)
        for a in (0.6, 0.7, 0.9)
    ]
    y, halves, retest = labels(ms, "loss")
    np.testing.assert_allclose(y, [0.6, 0.7, 0.9])  # loss is exactly linear in accuracy here
    np.testing.assert_allclose(halves[:, 0], y - 0.05)
    np.testing.assert_allclose(retest, y)
    y_acc, _, _ = labels(ms, "accuracy")
    np.testing.assert_allclose(y_acc, [0.6, 0.7, 0.9])
