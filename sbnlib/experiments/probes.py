"""What a run measures besides its loss: the internal-covariate-shift probe, the drift of BN's
running statistics, evaluation, and test accuracy under the three inference policies.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..layers import selective_bn, selective_layers
from ..scoring import score_batches
from .config import METHODS, SCOPES, TrainConfig


def switched_layers(model, scope: str = "all") -> list:
    """The selective layers of ``model`` that the per-batch decision switches under ``scope``
    (:data:`SCOPES`): all of them, or only the first in module order; the others stay on."""
    layers = list(selective_layers(model))
    return layers if SCOPES[scope].switch_all else layers[:1]


_NORM_TYPES = (torch.nn.modules.batchnorm._BatchNorm, torch.nn.GroupNorm, torch.nn.Identity)


def _input_moments(model, x, select) -> list:
    """``(module, mean, var)`` per channel of the input of every module ``select`` accepts.

    One forward pass of ``x`` in eval mode, without gradients; the model's mode is restored and no
    state changes. Means and population variances are over the batch and spatial axes
    (``torch.var_mean`` in the activations' dtype, returned as float64).
    """
    moments, hooks = [], []

    def hook(m, inputs, _out):
        t = inputs[0]
        var, mean = torch.var_mean(t, dim=[0] + list(range(2, t.dim())), correction=0)
        moments.append((m, mean.double(), var.double()))

    for m in model.modules():
        if select(m):
            hooks.append(m.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return moments


def _standardised_shift(mu, sd, mu_ref, sd_ref) -> torch.Tensor:
    """Mean over channels of ``|mu - mu_ref| / sd_ref + |log(sd / sd_ref)|``: how far one
    per-channel distribution sits from a reference one, in units of the reference's spread."""
    return ((mu - mu_ref).abs() / sd_ref + (sd / sd_ref).log().abs()).mean()


class _ShiftProbe:
    """Internal-covariate-shift probe: how much the inputs of the normalisation layers move.

    At each checkpoint the model runs in eval mode (no state changes, no gradients) on a fixed
    probe batch; forward hooks record, for every normalisation slot (BN, selective BN, GroupNorm,
    or the ``nn.Identity`` that ``norm="none"`` puts there), the per-channel mean ``mu`` and
    standard deviation ``sd`` of its input. The shift between consecutive checkpoints is

        mean over slots and channels of  |mu_t - mu_{t-1}| / sd_{t-1}  +  |log(sd_t / sd_{t-1})|

    (with 1e-5 added to variances), i.e. how far each layer's input distribution moved, in units
    of its own spread. It is a probe in eval mode, not the training-time distribution.
    """

    def __init__(self, model, x_probe, total_steps: int, points: int):
        self.model, self.x = model, x_probe
        self.at = set(np.linspace(0, total_steps, points + 1).round().astype(int).tolist()) if points else set()
        self.steps, self.shift, self._last = [], [], None

    def maybe(self, step: int) -> None:
        if step not in self.at:
            return
        stats = [(mu, (var + 1e-5).sqrt())
                 for _, mu, var in _input_moments(self.model, self.x, lambda m: isinstance(m, _NORM_TYPES))]
        if self._last is not None:
            parts = [_standardised_shift(mu, sd, mu0, sd0) for (mu, sd), (mu0, sd0) in zip(stats, self._last)]
            self.steps.append(step)
            self.shift.append(float(torch.stack(parts).mean()) if parts else float("nan"))
        self._last = stats

    def record(self) -> dict:
        return {"step": self.steps, "shift": self.shift}


@torch.no_grad()
def evaluate(model, x, y, batch_size=1000):
    """(accuracy, mean cross-entropy) of ``model`` in eval mode on tensors ``x``, ``y``."""
    was_training = model.training
    model.eval()
    correct, loss = 0, 0.0
    for i in range(0, x.shape[0], batch_size):
        out = model(x[i : i + batch_size])
        yb = y[i : i + batch_size]
        loss += F.cross_entropy(out, yb, reduction="sum").item()
        correct += (out.argmax(1) == yb).sum().item()
    model.train(was_training)
    return correct / x.shape[0], loss / x.shape[0]


def _running_stat_drift(model, x_probe) -> float:
    """How far BN's running statistics are from the statistics they stand for at inference.

    In eval mode (the inference-time network), forward hooks take each BN layer's actual input
    on a probe set of training images; per channel, with ``mu``/``sd`` its mean/std and
    ``mu_r``/``sd_r`` the running ones: mean over layers and channels of
    ``|mu_r - mu| / sd + |log(sd_r / sd)|`` (variances + eps). 0 means the running statistics are
    exact; selective BN gathers them only from the batches it normalised.
    """
    def tracked_bn(m):
        return isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats

    parts = [_standardised_shift(m.running_mean.double(), (m.running_var.double() + m.eps).sqrt(),
                                 mu, (var + m.eps).sqrt())
             for m, mu, var in _input_moments(model, x_probe, tracked_bn)]
    return float(torch.stack(parts).mean())


def _inference_policies(model, cfg: "TrainConfig", x_test, y_test, threshold, scorer) -> dict:
    """Test accuracy of a selective-BN network under three inference policies.

    ``running``: standard eval, every test batch normalised with the running statistics;
    ``bypass``: BN skipped on every test batch (as the skipped training batches saw it);
    ``selected``: test batches of the training batch size (stored order, the last one partial)
    are scored (``scorer``: the run's, fitted on the training inputs) and thresholded like the
    training batches; only those above the training threshold are normalised (only for
    ``selection="score"`` methods). Skipping acts on the layers the scope switches.
    """
    layers = switched_layers(model, cfg.scope)
    out = {"running": evaluate(model, x_test, y_test, cfg.eval_batch_size)[0]}
    with selective_bn(layers, enabled=False):
        out["bypass"] = evaluate(model, x_test, y_test, cfg.eval_batch_size)[0]
    out["selected"], out["selected_frac_normalized"] = None, None
    if METHODS[cfg.method].selection == "score" and threshold is not None:
        b, n = cfg.batch_size, x_test.shape[0]
        scores = score_batches(x_test, b, scorer).tolist() if n >= b else []
        if n % b:
            scores.append(float(scorer(x_test[n - n % b:][None].double())[0]))
        needs = np.asarray(scores) > threshold
        correct = 0
        model.eval()
        with torch.no_grad():
            for i, start in enumerate(range(0, n, b)):
                with selective_bn(layers, enabled=bool(needs[i])):
                    correct += (model(x_test[start:start + b]).argmax(1) == y_test[start:start + b]).sum().item()
        out["selected"], out["selected_frac_normalized"] = correct / n, float(needs.mean())
    return out
