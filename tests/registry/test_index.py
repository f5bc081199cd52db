"""The index document, entry by entry: parsing, rendering, revisions and choosing a model.

Pure functions on hand-written entries (no store), each message compared in full, so that
`make mutation` (mutmut on registry/index.py) finds a test for every rule."""

from __future__ import annotations

import json

import pytest

from onceflow.errors import RegistryError
from onceflow.registry.index import (
    IndexEntry,
    add_revision,
    empty_index,
    entry_from_manifest,
    find_revision,
    latest,
    parse_index,
    render_index,
    revision_of,
    select,
)

T = "ort-cpu"
SRC = "reg/ort-cpu/index.json"
ONNX_SHA = "a" * 64
MAN_SHA = "0123456789abcdef" + "b" * 48
CORRUPT = "the index is corrupt -- republish the model (`onceflow publish`) or restore index.json"


def doc(**over: object) -> dict:
    """One valid entry as stored (format 2)."""
    d = {
        "model_id": "r28-aaaa",
        "arch": "k3e2",
        "test_accuracy": 0.8,
        "latency_ms": 1.5,
        "predicted_latency_ms": 1.4,
        "budget_ms": 2.0,
        "backend": "onnxruntime",
        "created_at": "2024-01-01T00:00:00Z",
        "files": {
            "model.onnx": {"sha256": ONNX_SHA, "size": 10},
            "manifest.json": {"sha256": MAN_SHA, "size": 3},
        },
        "revision": "0123456789abcdef",
    }
    d.update(over)
    return d


def entry(mid: str, acc: float, lat: float, rev: str | None = None, man: str = MAN_SHA):
    files = {
        "model.onnx": {"sha256": ONNX_SHA, "size": 1},
        "manifest.json": {"sha256": man, "size": 1},
    }
    return IndexEntry(mid, "a", acc, lat, None, None, None, None, files, rev)


def index_bytes(models: list, version: object = 2, target: str = T) -> bytes:
    return json.dumps({"format_version": version, "target": target, "models": models}).encode()


# ------------------------------------------------------------------------------ entries
def test_entry_round_trips_and_names_itself() -> None:
    e = IndexEntry.from_json(doc(), SRC)
    assert e.to_json() == doc()
    assert (e.onnx_sha256, e.manifest_sha256) == (ONNX_SHA, MAN_SHA)
    assert e.label == "r28-aaaa@0123456789abcdef"
    bare = IndexEntry.from_json(doc(revision=None, predicted_latency_ms=None, budget_ms=None,
                                    backend=None, created_at=None), SRC)  # fmt: skip
    assert bare.label == "r28-aaaa" and bare.revision is None
    assert (bare.predicted_latency_ms, bare.budget_ms, bare.backend, bare.created_at) == (None,) * 4
    ints = IndexEntry.from_json(doc(test_accuracy=0, latency_ms=3, arch=7), SRC)
    assert (ints.test_accuracy, ints.latency_ms, ints.arch) == (0.0, 3.0, "7")
    assert type(ints.latency_ms) is float and type(ints.test_accuracy) is float


def test_entry_keeps_only_sha_and_size_of_each_file() -> None:
    files = {"model.onnx": {"sha256": ONNX_SHA, "size": 0, "extra": 1},
             "manifest.json": {"sha256": MAN_SHA, "size": 3}}  # fmt: skip
    assert IndexEntry.from_json(doc(files=files), SRC).files["model.onnx"] == {
        "sha256": ONNX_SHA, "size": 0,
    }  # fmt: skip


def test_an_entry_that_is_not_an_object() -> None:
    with pytest.raises(RegistryError) as err:
        IndexEntry.from_json(["x"], SRC)
    assert str(err.value) == f"{SRC}: an entry of 'models' is not an object; index corrupt"


@pytest.mark.parametrize(
    ("over", "why"),
    [
        ({"test_accuracy": -0.5}, "ValueError: expected a finite number >= 0, got -0.5"),
        ({"test_accuracy": True}, "ValueError: expected a finite number >= 0, got True"),
        ({"latency_ms": "1"}, "ValueError: expected a finite number >= 0, got '1'"),
        ({"latency_ms": float("inf")}, "ValueError: expected a finite number >= 0, got inf"),
        ({"predicted_latency_ms": float("nan")},
         "ValueError: expected a finite number >= 0, got nan"),
        ({"budget_ms": -1}, "ValueError: expected a finite number >= 0, got -1"),
        ({"backend": 3}, "TypeError: expected a string, got int"),
        ({"created_at": 1.5}, "TypeError: expected a string, got float"),
        ({"files": None}, "AttributeError: 'NoneType' object has no attribute 'items'"),
        ({"files": {"model.onnx": {"sha256": "ab", "size": 1}}},
         "ValueError: a file record must be {sha256: 64 hex chars, size: bytes}"),
        ({"files": {"model.onnx": {"sha256": 64 * "a", "size": -1}}},
         "ValueError: a file record must be {sha256: 64 hex chars, size: bytes}"),
        ({"files": {"model.onnx": {"sha256": 64 * "a", "size": "1"}}},
         "ValueError: a file record must be {sha256: 64 hex chars, size: bytes}"),
        ({"files": {"model.onnx": {"sha256": 64 * "a"}}}, "KeyError: 'size'"),
        ({"files": {"model.onnx": {"size": 1}}}, "KeyError: 'sha256'"),
    ],
)  # fmt: skip
def test_malformed_entries_name_the_problem(over: dict, why: str) -> None:
    with pytest.raises(RegistryError) as err:
        IndexEntry.from_json(doc(**over), SRC)
    assert str(err.value) == f"{SRC}: entry 'r28-aaaa' is malformed ({why}); {CORRUPT}"


def test_sha_of_any_type_other_than_text_is_refused() -> None:
    files = {"model.onnx": {"sha256": 1234, "size": 1}}
    with pytest.raises(RegistryError, match="a file record must be"):
        IndexEntry.from_json(doc(files=files), SRC)


def test_missing_required_fields_and_bad_revision() -> None:
    d = doc()
    del d["arch"]
    with pytest.raises(RegistryError) as err:
        IndexEntry.from_json(d, SRC)
    assert str(err.value) == f"{SRC}: entry 'r28-aaaa' is malformed (KeyError: 'arch'); {CORRUPT}"
    with pytest.raises(RegistryError, match=r"invalid revision 'XYZ'"):
        IndexEntry.from_json(doc(revision="XYZ"), SRC)
    with pytest.raises(RegistryError, match=r"invalid model id '\.\./x'"):
        IndexEntry.from_json(doc(model_id="../x"), SRC)
    only = {"model.onnx": {"sha256": ONNX_SHA, "size": 1}}
    with pytest.raises(RegistryError) as err:
        IndexEntry.from_json(doc(files=only), SRC)
    assert str(err.value) == (
        f"{SRC}: entry 'r28-aaaa' lacks manifest.json or model.onnx hashes; the index is corrupt"
    )
    with pytest.raises(RegistryError, match="lacks manifest.json or model.onnx"):
        IndexEntry.from_json(doc(files={"manifest.json": {"sha256": MAN_SHA, "size": 1}}), SRC)


def test_revision_is_the_manifest_sha_prefix() -> None:
    assert revision_of(MAN_SHA) == "0123456789abcdef"


def test_entry_from_manifest() -> None:
    manifest = {
        "model_id": "r28-aaaa", "arch": {"string": "k3e2"}, "test_accuracy": 0.75,
        "latency_ms": {"measured": 2, "predicted": 2.5, "budget": 3},
        "backend": "onnxruntime", "created_at": "2024",
        "files": {"model.onnx": {"sha256": ONNX_SHA, "size": 10}},
    }  # fmt: skip
    e = entry_from_manifest(manifest, {"sha256": MAN_SHA, "size": 3})
    assert e == IndexEntry(
        "r28-aaaa", "k3e2", 0.75, 2.0, 2.5, 3.0, "onnxruntime", "2024",
        {"model.onnx": {"sha256": ONNX_SHA, "size": 10},
         "manifest.json": {"sha256": MAN_SHA, "size": 3}},
        "0123456789abcdef",
    )  # fmt: skip
    minimal = {"model_id": "m", "test_accuracy": 1, "latency_ms": {"measured": 1},
               "files": {"model.onnx": {"sha256": ONNX_SHA, "size": 1}}}  # fmt: skip
    m = entry_from_manifest(minimal, {"sha256": MAN_SHA, "size": 3})
    assert (m.arch, m.predicted_latency_ms, m.budget_ms, m.backend, m.created_at) == (
        "", None, None, None, None,
    )  # fmt: skip


# ------------------------------------------------------------------------------ documents
def test_empty_and_rendered_index() -> None:
    assert empty_index(T) == {"format_version": 2, "target": T, "models": []}
    assert (
        render_index("t", []) == b'{\n  "format_version": 2,\n  "models": [],\n  "target": "t"\n}\n'
    )
    entries = [IndexEntry.from_json(doc(), SRC), IndexEntry.from_json(doc(model_id="b"), SRC)]
    assert parse_index(render_index(T, entries), T, SRC) == entries


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{", "not valid JSON (Expecting property name enclosed in double quotes at line 1 "
               "column 2: truncated or damaged); the index is corrupt; restore it from a backup "
               "or republish the packages (`onceflow publish`)"),
        (b"\xff\xfe", "not UTF-8 text (byte 0); the index is corrupt; restore it from a backup "
                      "or republish the packages (`onceflow publish`)"),
        (b"[]", "a JSON array where an object belongs; the index is corrupt; restore it from a "
                "backup or republish the packages (`onceflow publish`)"),
        (b'{"target": "ort-cpu"}', "not an onceflow index (no format_version)"),
        (index_bytes([], version=3), "index format_version 3 is not one this onceflow reads "
                                     "(1, 2); upgrade onceflow to read this registry"),
        (index_bytes([], version=0), "index format_version 0 is not one this onceflow reads "
                                     "(1, 2); upgrade onceflow to read this registry"),
        (index_bytes([], target="other"), "index is for target 'other', not 'ort-cpu'; the index "
                                          "is misplaced or corrupt"),
        (json.dumps({"format_version": 2, "target": T}).encode(),
         "'models' must be a list; the index is corrupt"),
        (json.dumps({"format_version": 2, "target": T, "models": {}}).encode(),
         "'models' must be a list; the index is corrupt"),
        (index_bytes([doc(), doc()]),
         "r28-aaaa@0123456789abcdef is listed twice; the index is corrupt"),
    ],
)  # fmt: skip
def test_bad_index_documents(data: bytes, message: str) -> None:
    with pytest.raises(RegistryError) as err:
        parse_index(data, T, SRC)
    assert str(err.value) == f"{SRC}: {message}"


def test_format_1_entries_have_no_revision_and_order_is_kept() -> None:
    got = parse_index(index_bytes([doc(model_id="b"), doc(model_id="a")], version=1), T, SRC)
    assert [(e.model_id, e.revision) for e in got] == [("b", None), ("a", None)]
    with pytest.raises(RegistryError, match="r28-aaaa is listed twice"):
        parse_index(index_bytes([doc(revision="1111111111111111"), doc()], version=1), T, SRC)
    two = parse_index(index_bytes([doc(revision="1111111111111111"), doc()]), T, SRC)
    assert [e.revision for e in two] == ["1111111111111111", "0123456789abcdef"]
    assert parse_index(index_bytes([]), T, SRC) == []


# ------------------------------------------------------------------------------ revisions
def test_find_and_add_revision() -> None:
    a1 = entry("a", 0.8, 1.0, "1111111111111111", man="1" * 64)
    a2 = entry("a", 0.8, 1.2, "2222222222222222", man="2" * 64)
    b1 = entry("b", 0.8, 1.0, "1111111111111111", man="1" * 64)
    assert find_revision([a1], a1) is a1
    assert find_revision([a1], a2) is None
    assert find_revision([b1], a1) is None
    assert find_revision([b1, a1], a1) is a1
    assert add_revision([a1], a1) is None
    assert add_revision([a1], a2) == [a1, a2]
    assert latest([a1, b1, a2]) == [a2, b1]
    assert latest([]) == []


# ------------------------------------------------------------------------------ select
def _catalogue() -> list[IndexEntry]:
    return [
        entry("fast", 0.70, 1.0, "aaaa000000000000"),
        entry("mid", 0.80, 2.0, "bbbb000000000000"),
        entry("slow", 0.90, 4.0, "cccc000000000000"),
        entry("mid", 0.85, 2.5, "bbbb111111111111"),  # mid's newest revision
    ]


def test_select_by_budget_and_floor() -> None:
    cat = _catalogue()
    assert select(cat, T, max_latency_ms=2.5).revision == "bbbb111111111111"
    assert select(cat, T, max_latency_ms=2.4).model_id == "fast"  # mid@old no longer counts
    assert select(cat, T, max_latency_ms=4.0).model_id == "slow"  # the budget is inclusive
    assert select(cat, T, min_accuracy=0.85).model_id == "mid"  # the floor is inclusive
    assert select(cat, T, min_accuracy=0.86).model_id == "slow"
    assert select(cat, T, min_accuracy=0.7).model_id == "fast"
    assert select(cat, T, max_latency_ms=9, min_accuracy=0.8).model_id == "slow"
    assert select(cat, T, max_latency_ms=3, min_accuracy=0.85).model_id == "mid"


def test_select_ties() -> None:
    # Within a budget: most accurate, then the faster, then the larger id.
    tie = [entry("b", 0.8, 2.0), entry("a", 0.8, 1.0), entry("c", 0.7, 0.5)]
    assert select(tie, T, max_latency_ms=5).model_id == "a"
    same = [entry("a", 0.8, 1.0), entry("b", 0.8, 1.0)]
    assert select(same, T, max_latency_ms=5).model_id == "b"
    # A floor only: fastest, then the more accurate, then the smaller id.
    floor = [entry("b", 0.9, 1.0), entry("a", 0.8, 1.0), entry("c", 0.95, 3.0)]
    assert select(floor, T, min_accuracy=0.5).model_id == "b"
    assert select(same, T, min_accuracy=0.5).model_id == "a"


def test_select_explains_what_is_missing() -> None:
    cat = _catalogue()
    with pytest.raises(RegistryError) as err:
        select([], T, max_latency_ms=1)
    assert str(err.value) == "target 'ort-cpu' has no published models"
    with pytest.raises(RegistryError) as err:
        select(cat, T)
    assert str(err.value) == (
        "say what to pull: a latency budget (--max-latency-ms), an accuracy floor "
        "(--min-accuracy), or an explicit --model-id"
    )
    tail = ("the fastest available is fast at 1.000 ms (test accuracy 0.7000), the most "
            "accurate slow at 0.9000 (4.000 ms)")  # fmt: skip
    with pytest.raises(RegistryError) as err:
        select(cat, T, max_latency_ms=0.5)
    assert str(err.value) == f"no model for target 'ort-cpu' within 0.5 ms; {tail}"
    with pytest.raises(RegistryError) as err:
        select(cat, T, min_accuracy=0.95)
    assert str(err.value) == f"no model for target 'ort-cpu' with accuracy >= 0.95; {tail}"
    with pytest.raises(RegistryError) as err:
        select(cat, T, max_latency_ms=1.5, min_accuracy=0.8)
    assert str(err.value) == (
        f"no model for target 'ort-cpu' within 1.5 ms and with accuracy >= 0.8; {tail}"
    )
    # The fastest and the most accurate, ties broken the other way round.
    ties = [entry("x", 0.9, 1.0), entry("y", 0.8, 1.0), entry("z", 0.9, 2.0)]
    with pytest.raises(RegistryError) as err:
        select(ties, T, max_latency_ms=0.1)
    assert "fastest available is x at 1.000 ms" in str(err.value)
    assert "the most accurate x at 0.9000 (1.000 ms)" in str(err.value)


def test_select_one_model() -> None:
    cat = _catalogue()
    assert select(cat, T, model_id="mid").revision == "bbbb111111111111"
    assert select(cat, T, model_id="mid", max_latency_ms=2.5, min_accuracy=0.85).model_id == "mid"
    with pytest.raises(RegistryError) as err:
        select(cat, T, model_id="mid", max_latency_ms=2.4)
    assert str(err.value) == (
        "model mid@bbbb111111111111 measures 2.500 ms on 'ort-cpu', over the --max-latency-ms "
        "budget of 2.4 ms"
    )
    with pytest.raises(RegistryError) as err:
        select(cat, T, model_id="mid", min_accuracy=0.9)
    assert str(err.value) == (
        "model mid@bbbb111111111111 has test accuracy 0.8500, below --min-accuracy 0.9"
    )
    with pytest.raises(RegistryError) as err:
        select(cat, T, model_id="nope")
    assert str(err.value) == (
        "model 'nope' is not in the registry for target 'ort-cpu'; available: fast, mid, slow"
    )
    with pytest.raises(RegistryError, match=r"invalid model id 'Bad/'"):
        select(cat, T, model_id="Bad/")


def test_select_a_revision() -> None:
    cat = _catalogue()
    assert select(cat, T, revision="bbbb0").latency_ms == 2.0
    assert select(cat, T, model_id="mid", revision="bbbb1").latency_ms == 2.5
    assert select(cat, T, revision="cccc").model_id == "slow"  # 4 digits are enough
    with pytest.raises(RegistryError) as err:
        select(cat, T, revision="bbbb")
    assert str(err.value) == (
        "2 revisions of any model on target 'ort-cpu' matches --revision 'bbbb'; known: "
        "fast@aaaa000000000000, mid@bbbb000000000000, slow@cccc000000000000, mid@bbbb111111111111"
    )
    with pytest.raises(RegistryError) as err:
        select(cat, T, model_id="fast", revision="bbbb0")
    assert str(err.value) == (
        "no revision of fast on target 'ort-cpu' matches --revision 'bbbb0'; known: "
        "fast@aaaa000000000000"
    )
    for bad in ("abc", "ABCD", "abcg"):
        with pytest.raises(RegistryError) as err:
            select(cat, T, revision=bad)
        assert str(err.value) == f"invalid --revision {bad!r}: give 4-64 lower-case hex digits"
    with pytest.raises(RegistryError) as err:  # format-1 entries have no revision
        select([entry("old", 0.5, 1.0)], T, revision="abcd")
    assert str(err.value).endswith("matches --revision 'abcd'; known: old")
