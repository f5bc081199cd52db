"""Parity between the torch model and its ONNX export run by ONNX Runtime.

A package ships only if ONNX Runtime reproduces the torch logits on real images: the largest
absolute logit difference stays within ``atol`` and the top-1 class agrees on at least
``min_agreement`` of the images. Anything else means the export changed the model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from onceflow.errors import OnceflowError


class ParityError(OnceflowError):
    """ONNX Runtime does not reproduce the torch model's outputs: the package is not shipped."""


class Int8ParityError(ParityError):
    """The int8 model agrees too little with its fp32 subnet: that pick is not shipped (the
    target's other picks still are)."""


@dataclass(frozen=True)
class ParityReport:
    n_images: int
    max_abs_diff: float  # over all logits of all images
    top1_agreement: float  # fraction of images whose argmax matches
    atol: float
    min_agreement: float

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.atol and self.top1_agreement >= self.min_agreement

    def to_json(self) -> dict:
        return {**asdict(self), "passed": self.passed}


def ort_session(onnx_bytes: bytes, threads: int = 1) -> object:
    """A CPU ONNX Runtime session with fixed thread counts and no busy-waiting."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(onnx_bytes, sess_options=so, providers=["CPUExecutionProvider"])


def run_onnx(session: object, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Logits of float32 NCHW ``x``, in batches (exercises the dynamic batch axis)."""
    name = session.get_inputs()[0].name
    outs = [
        session.run(None, {name: x[i : i + batch_size]})[0] for i in range(0, len(x), batch_size)
    ]
    return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)


@torch.no_grad()
def torch_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        outs = [
            model(x[i : i + batch_size].to(device)).float().cpu()
            for i in range(0, len(x), batch_size)
        ]
    finally:
        model.train(was_training)
    return torch.cat(outs).numpy()


def compare(
    reference: np.ndarray, candidate: np.ndarray, atol: float, min_agreement: float
) -> ParityReport:
    """Parity of two (N, classes) logit arrays."""
    if reference.shape != candidate.shape:
        raise ParityError(
            f"ONNX output shape {candidate.shape} differs from torch's {reference.shape}"
        )
    diff = float(np.max(np.abs(reference - candidate))) if reference.size else 0.0
    agree = float(np.mean(reference.argmax(1) == candidate.argmax(1))) if len(reference) else 1.0
    return ParityReport(len(reference), diff, agree, atol, min_agreement)


def check_parity(
    model: nn.Module,
    onnx_bytes: bytes,
    x: torch.Tensor,
    *,
    atol: float,
    min_agreement: float,
    threads: int = 1,
    batch_size: int = 64,
) -> ParityReport:
    """Run ``x`` (float32 NCHW, normalized) through torch and ONNX Runtime and compare."""
    ref = torch_logits(model, x, batch_size)
    got = run_onnx(ort_session(onnx_bytes, threads), x.cpu().numpy().astype(np.float32), batch_size)
    return compare(ref, got, atol, min_agreement)


def require_parity(report: ParityReport, what: str) -> None:
    """Raise ParityError (with the numbers and thresholds) unless the report passed."""
    if not report.passed:
        raise ParityError(
            f"{what}: ONNX Runtime does not match torch on {report.n_images} images: max |logit "
            f"diff| {report.max_abs_diff:.3g} (limit {report.atol:g}), top-1 agreement "
            f"{100 * report.top1_agreement:.2f}% (need {100 * report.min_agreement:.2f}%); the "
            "export changed the model -- not packaging it (check unsupported ops / opset)"
        )
