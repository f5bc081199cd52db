import numpy as np
import pytest

from onceflow.config import DataConfig
from onceflow.data.validate import image_table, run_gate
from tests.conftest import synthetic_images


def _splits(n_train=20, n_val=5, n_test=5):
    return {
        "train": synthetic_images(n_train, seed=1),
        "val": synthetic_images(n_val, seed=2),
        "test": synthetic_images(n_test, seed=3),
    }


SETTINGS = DataConfig(min_images_per_class=2, class_balance_tolerance=0.5)


def _failed(splits, cfg=SETTINGS):
    result = run_gate(image_table(splits, 10), cfg, n_classes=10, shape=(28, 28, 1))
    return result, {e.name: e.observed for e in result.failures}


def test_gate_passes_on_good_data():
    result, failed = _failed(_splits())
    assert result.success and not failed
    assert result.to_json()["expectations"][0]["success"] is True
    assert "PASSED" in result.summary_markdown()


def test_class_missing_from_a_split():
    splits = _splits()
    x, y = splits["test"]
    keep = y != 3
    splits["test"] = (x[keep], y[keep])
    result, failed = _failed(splits)
    assert not result.success
    assert failed["every_class_present"].startswith("missing test:3 (1 split:class pair")


def test_train_image_leaking_into_test():
    splits = _splits()
    x, y = splits["train"]
    tx, ty = splits["test"]
    splits["train"] = (np.concatenate([x, tx[:2]]), np.concatenate([y, ty[:2]]))
    _, failed = _failed(splits)
    assert failed["no_test_leak"].startswith("2 images (train: 2) also in test")
    assert "remove them" in failed["no_test_leak"]


def test_class_imbalance_and_minimum_count():
    splits = _splits()
    x, y = splits["val"]
    drop = np.flatnonzero(y == 4)[:4]  # leave one image of class 4 in val
    keep = np.setdiff1d(np.arange(len(y)), drop)
    splits["val"] = (x[keep], y[keep])
    _, failed = _failed(splits)
    assert "val class 4: 1 image" in failed["class_balance"]
    assert "data.class_balance_tolerance" in failed["class_balance"]
    assert "val class 4: 1 image" in failed["min_images_per_class"]
    assert "need >= 2" in failed["min_images_per_class"]


def test_labels_outside_class_set_and_wrong_shape():
    splits = _splits()
    x, y = splits["train"]
    y = y.copy()
    y[0] = 11
    splits["train"] = (x, y)
    splits["test"] = synthetic_images(5, size=32, seed=3)
    _, failed = _failed(splits)
    assert "labels [11] in 1 of " in failed["label_in_class_set"]
    assert "0..9" in failed["label_in_class_set"]  # what the labels must be
    assert failed["expected_shape"].startswith("shapes ['32x32x1'] in 50 of ")
    assert "expected 28x28x1" in failed["expected_shape"]


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_minimum_split_size(split):
    splits = _splits()
    x, y = splits[split]
    splits[split] = (x[:5], y[:5])
    _, failed = _failed(splits, DataConfig(min_images_per_class=1, class_balance_tolerance=1.0))
    assert f"{split}: 5 images" in failed["min_split_size"]
    assert "need >= 10" in failed["min_split_size"]


def test_train_val_duplicates_fail_above_the_threshold():
    splits = _splits()
    (tx, ty), (vx, vy) = splits["train"], splits["val"]
    splits["val"] = (np.concatenate([vx, tx[:7]]), np.concatenate([vy, ty[:7]]))
    result, failed = _failed(splits)
    assert not result.success and result.n_train_val_duplicates == 7
    assert failed["train_val_duplicates"].startswith("7 val images duplicate train images")
    assert "data.max_train_val_duplicates" in failed["train_val_duplicates"]
    assert result.to_json()["n_train_val_duplicates"] == 7
    ok, failed = _failed(splits, SETTINGS.model_copy(update={"max_train_val_duplicates": 7}))
    assert "train_val_duplicates" not in failed
