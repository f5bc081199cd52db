"""The model card (``README.md``) of a package, rendered from its manifest fields.

The card holds nothing the manifest does not, and no creation time, so rebuilding an identical
package gives an identical card.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _ms(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f} ms"


def _quantization_lines(q: Mapping[str, Any] | None) -> list[str]:
    if not q:
        return []
    return [
        f"- int8 ({q['format']}, weights {q['weights']}, activations {q['activations']}): "
        f"fp32 accuracy {100 * q['test_accuracy_fp32']:.2f}%, drop "
        f"{q['accuracy_drop_pp']:.2f} pp; top-1 agreement with the fp32 subnet "
        f"{100 * q['top1_agreement_vs_fp32']:.2f}% on {q['n_images']} images "
        f"(required {100 * q['min_agreement']:.2f}%)"
    ]


def _latency_line(m: Mapping[str, Any], lat: Mapping[str, Any], ratio: str) -> str:
    if lat.get("timed_on_device") is False:  # an imported target: its device is not attached
        return (
            f"- Latency: **{_ms(lat['measured'])}** predicted for `{m['target']}` (batch "
            f"{lat.get('batch_size', 1)}) by a model fit on the device's own timings of sample "
            "subnets (an imported target); this package was not timed on the device, so there "
            "is no on-device latency check: time it there before relying on the budget"
        )
    return (
        f"- Latency: **{_ms(lat['measured'])}** measured on `{m['target']}` (median, batch "
        f"{lat.get('batch_size', 1)}); predicted {_ms(lat.get('predicted'))}{ratio}"
    )


def render_card(m: Mapping[str, Any]) -> str:
    """Markdown: what the model is, accuracy, latency, input spec, 5 lines of onnxruntime."""
    inp, lat, arch = m["input"], m["latency_ms"], m["arch"]
    norm = inp["normalization"]
    shape = ["N" if d is None else str(d) for d in inp["shape"]]
    res = inp["resolution"]
    native = f"{inp['source_height']}x{inp['source_width']}"
    resize = (
        f"resize {native} -> {res}x{res} ({inp['resize']}), "
        if (inp["source_height"], inp["source_width"]) != (res, res)
        else ""
    )
    resized = f", resized from {native} first" if resize else ""
    pred = m.get("predicted_accuracy")
    pred_acc = "n/a" if pred is None else f"{100 * pred:.2f}%"
    r = lat.get("ratio")
    ratio = "" if r is None else f" (measured / predicted {r:.2f})"
    classes = ", ".join(f"{i}: {c}" for i, c in enumerate(inp["class_names"]))
    lines = [
        f"# {m['model_id']}",
        "",
        f"A subnet of the onceflow Once-for-All supernet, specialized for target `{m['target']}` "
        f"(backend {m.get('backend') or 'n/a'}, {m.get('precision') or 'fp32'}), "
        f"selected for a latency budget of {_ms(lat.get('budget'))}.",
        "",
        f"- Architecture: `{arch['string']}`",
        f"- Test accuracy (top-1): **{100 * m['test_accuracy']:.2f}%** on {m.get('n_test', 'n/a')} "
        f"test images, ONNX Runtime (predicted at search time: {pred_acc})",
        _latency_line(m, lat, ratio),
        f"- Parity ONNX Runtime vs PyTorch: max |diff| {m['parity']['max_abs_diff']:.2g}, top-1 "
        f"agreement {100 * m['parity']['top1_agreement']:.2f}% on {m['parity']['n_images']} images",
        *_quantization_lines(m.get("quantization")),
        "",
        "## Input",
        "",
        f"`{inp['name']}`: {inp['dtype']} {inp['layout']} `[{', '.join(shape)}]` (dynamic batch). "
        f"Preprocessing: {resize}pixels / 255, then per channel (x - mean) / std with "
        f"mean {list(norm['mean'])}, std {list(norm['std'])}. Output `{m['output']['name']}`: "
        f"`[N, {len(inp['class_names'])}]` logits.",
        "",
        f"Classes: {classes}",
        "",
        "## Run it",
        "",
        "```python",
        "import numpy as np, onnxruntime as ort",
        'sess = ort.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])',
        f"mean, std = np.array({list(norm['mean'])}), np.array({list(norm['std'])})",
        "x = ((images_u8 / 255.0 - mean) / std).astype(np.float32).transpose(0, 3, 1, 2)"
        f"  # images_u8: uint8 (N, {res}, {res}, {len(norm['mean'])}){resized}",
        f'pred = sess.run(["{m["output"]["name"]}"], {{"{inp["name"]}": x}})[0].argmax(1)',
        "```",
        "",
        "## Files",
        "",
        *[f"- `{n}`: {r['size']} bytes, sha256 `{r['sha256']}`" for n, r in m["files"].items()],
        "- `manifest.json`: everything above plus lineage (git commit, DVC hashes, params)",
        "",
    ]
    return "\n".join(lines)
