"""Losses of the sandwich rule: hard labels for the max subnet, in-place distillation for the rest.

``alpha`` is AlphaNet's adaptive alpha-divergence (Wang et al., 2021): per sample, the larger of
D_{alpha_min} and D_{alpha_max} between teacher p and student q, with the importance ratio p/q
clipped, and a gradient estimator that only flows through the student's log-probabilities.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kl_distill(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) averaged over the batch; teacher logits are not differentiated."""
    return F.kl_div(
        F.log_softmax(student, 1),
        F.log_softmax(teacher.detach(), 1),
        reduction="batchmean",
        log_target=True,
    )


def _f_divergence(
    q_logits: torch.Tensor, p_logits: torch.Tensor, alpha: float, clip: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-sample D_alpha(p||q) value, per-sample surrogate whose gradient is the estimator)."""
    q_prob = F.softmax(q_logits, 1).detach()
    p_prob = F.softmax(p_logits, 1).detach()
    q_log_prob = F.log_softmax(q_logits, 1)
    ratio = p_prob / q_prob.clamp_min(1e-12)
    if abs(alpha) < 1e-3:
        ratio = ratio.clamp(1e-12, clip)
        f, f_base, rho = -ratio.log(), 0.0, ratio.log() - 1.0
    elif abs(alpha - 1.0) < 1e-3:
        ratio = ratio.clamp_min(1e-12)
        f, f_base, rho = ratio * ratio.log(), 0.0, ratio
    else:
        iw = ratio.pow(alpha).clamp(0.0, clip)
        f_base = 1.0 / alpha / (alpha - 1.0)
        f, rho = iw / alpha / (alpha - 1.0), iw / alpha + f_base
    value = (q_prob * (f - f_base)).sum(1)
    surrogate = -(q_prob * rho * q_log_prob).sum(1)
    return value, surrogate


def alpha_distill(
    student: torch.Tensor,
    teacher: torch.Tensor,
    alpha_min: float = -1.0,
    alpha_max: float = 1.0,
    clip: float = 5.0,
) -> torch.Tensor:
    """Adaptive alpha-divergence distillation loss (AlphaNet), averaged over the batch."""
    teacher = teacher.detach()
    if alpha_min == alpha_max:
        v, g = _f_divergence(student, teacher, alpha_max, clip)
        return _value_with_grad(v.mean(), g.mean())
    v_lo, g_lo = _f_divergence(student, teacher, alpha_min, clip)
    v_hi, g_hi = _f_divergence(student, teacher, alpha_max, clip)
    pick_lo = (v_lo > v_hi).float()
    value = torch.maximum(v_lo, v_hi).mean()
    surrogate = (pick_lo * g_lo + (1.0 - pick_lo) * g_hi).mean()
    return _value_with_grad(value, surrogate)


def _value_with_grad(value: torch.Tensor, surrogate: torch.Tensor) -> torch.Tensor:
    """A tensor equal to ``value`` whose gradient is the surrogate's (logs the divergence)."""
    return value.detach() + surrogate - surrogate.detach()
