"""Per-seed SGD over packed parameters (:mod:`.packed`): seed ``s``'s blocks of every packed
tensor are rows ``s*k .. (s+1)*k`` of its first axis, so each seed gets its own gradient norm, its
own learning rate, and can be left alone by a step (a diverged seed, a skipped identity BN layer).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

__all__ = ["seed_grad_norms"]


def seed_grad_norms(params: Sequence[Tensor], num_seeds: int) -> Tensor:
    """Per seed, the global 2-norm of its own gradients, as ``torch.nn.utils.get_total_norm`` computes
    it for a single model (the norm of the per-tensor norms); parameters without a gradient are left out."""
    norms = [torch.linalg.vector_norm(p.grad.reshape(num_seeds, -1), dim=1) for p in params if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(norms), dim=0)


def _sgd_step(opt: torch.optim.SGD, lrs: torch.Tensor, num_seeds: int) -> None:
    """One step of ``opt`` (SGD) in which seed ``k``'s blocks move with learning rate ``lrs[k]``.

    The arithmetic of torch's single-tensor SGD (weight decay, momentum buffer, Nesterov), except
    the last line: ``p -= lr * d`` with a per-seed ``lr``, so that one packed group can train the
    seeds of a configuration at several learning rates (the learning-rate selection). Every packed
    step goes through here, whatever the rates, so a seed's numbers do not depend on the rates beside it."""
    group = opt.param_groups[0]
    wd, mu, nesterov = group["weight_decay"], group["momentum"], group["nesterov"]
    with torch.no_grad():
        for p in group["params"]:
            if p.grad is None:
                continue  # no gradient: SGD leaves the parameter alone
            d = p.grad if wd == 0 else p.grad.add(p, alpha=wd)
            if mu != 0:
                state = opt.state[p]
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = torch.clone(d).detach()
                else:
                    buf.mul_(mu).add_(d)
                d = d.add(buf, alpha=mu) if nesterov else buf
            shape = (num_seeds,) + (1,) * p.dim()  # one rate per seed block of the first axis
            p.unflatten(0, (num_seeds, -1)).addcmul_(d.unflatten(0, (num_seeds, -1)), lrs.view(shape), value=-1)


def _step_except(opt: torch.optim.Optimizer, lrs: torch.Tensor, frozen: Sequence[tuple], num_seeds: int) -> None:
    """:func:`_sgd_step`, except that for every ``(parameter, seeds)`` of ``frozen`` the blocks of
    the seeds in the bool mask ``seeds`` keep their values and momentum buffers.

    Used where a single run would not have touched them: a diverged seed's run has ended, and the
    affine parameters of a BN layer that a seed skipped as identity had no gradient in its single
    run, where SGD then leaves a parameter alone altogether (no weight decay, no momentum); packed,
    they have a zero gradient, which SGD would not ignore. A momentum buffer that did not exist yet
    is kept at zero, which is what it is for SGD when it is first created (``buf = grad``)."""
    saved = []
    for p, seeds in frozen:
        buf = opt.state[p].get("momentum_buffer") if p in opt.state else None
        saved.append((p, seeds, p.detach().unflatten(0, (num_seeds, -1))[seeds].clone(),
                      None if buf is None else buf.unflatten(0, (num_seeds, -1))[seeds].clone()))
    _sgd_step(opt, lrs, num_seeds)
    with torch.no_grad():
        for p, seeds, value, buf in saved:
            p.unflatten(0, (num_seeds, -1))[seeds] = value
            new = opt.state[p].get("momentum_buffer") if p in opt.state else None
            if new is not None:
                new.unflatten(0, (num_seeds, -1))[seeds] = 0.0 if buf is None else buf
