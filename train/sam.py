"""Sharpness-aware minimisation (Foret et al., ICLR 2021), as Self-Blended Images (Shiohara and Yamasaki, CVPR 2022)
trains its detector: each step takes the gradient at the weights moved uphill by ``rho`` along the batch's own
gradient, so the optimiser prefers weights whose loss stays low around them (flat minima, which carry better to data
not seen in training). Two forward and backward passes a step.

``gradient_uphill`` is the step's second half, between the first backward pass and the optimiser's step: ``climb``
moves the weights and returns what ``descend`` needs to put them back; ``batch_statistics_kept`` keeps the second pass
from counting the batch twice in the batch-norm running statistics.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch


def gradient_uphill(model: torch.nn.Module, rho: float, backward) -> None:
    """After a backward pass has filled ``model``'s gradients: replace them by those ``backward()`` (the same batch's
    loss, forward and backward again) gives at the weights moved ``rho`` uphill, and put the weights back, so that the
    optimiser's step starts from where it would have and goes where SAM says."""
    moved = climb(model.parameters(), rho)
    for p, _ in moved:
        p.grad = None
    with batch_statistics_kept(model):
        backward()
    descend(moved)


@torch.no_grad()
def climb(params, rho: float) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Move each parameter with a gradient by ``rho * grad / ||grad||`` (the norm over all of them together); ->
    the (parameter, step) pairs ``descend`` takes back."""
    with_grad = [p for p in params if p.grad is not None]
    if not with_grad:
        return []
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad.float()) for p in with_grad]))
    scale = rho / (norm + 1e-12)
    moved = []
    for p in with_grad:
        step = p.grad * scale.to(p.grad.dtype)
        p.add_(step)
        moved.append((p, step))
    return moved


@torch.no_grad()
def descend(moved: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Put back the weights ``climb`` moved (their gradients are left as the second pass set them)."""
    for p, step in moved:
        p.sub_(step)


@contextmanager
def batch_statistics_kept(model: torch.nn.Module):
    """Batch norms still normalise by the batch's statistics inside, but their running statistics stay as they were
    (momentum 0), so that SAM's second pass over the same batch does not count it twice."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    tracked = [m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum, count in zip(norms, momenta, tracked):
            m.momentum = momentum
            if count is not None:
                m.num_batches_tracked.copy_(count)
