"""The record of a run: the per-step series (:class:`StepLog`), one line per epoch, and the result
record a finished run returns and a sweep stores.
"""
from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

import numpy as np

from ..layers import bn_counts, selective_layers
from ..provenance import machine, portable, produced, versions
from ..scoring import fit_scorer
from .config import SCHEMA_VERSION, STEP_POINTS, config_dict, config_hash
from .metrics import grad_norm_cv, loss_volatility
from .probes import _inference_policies, _running_stat_drift, evaluate

if TYPE_CHECKING:  # an annotation only (train imports this module)
    from .train import TrainingData


class StepLog:
    """The per-step series of one run, kept in full while it trains.

    The record stores them compactly (:meth:`compact`: ``STEP_POINTS`` chunk means), while the
    stability metrics are computed from the full series at run time (:meth:`metrics`).
    """

    def __init__(self):
        self.loss, self.grad_norm, self.bn_on, self.lr = [], [], [], []

    def add(self, loss: float, grad_norm: float, bn_on: bool, lr: float) -> None:
        self.loss.append(loss)
        self.grad_norm.append(grad_norm)
        self.bn_on.append(bn_on)
        self.lr.append(lr)

    def __len__(self) -> int:
        return len(self.loss)

    def compact(self, points: int = STEP_POINTS) -> dict:
        """Means over ``points`` contiguous chunks of steps (``at``: each chunk's first step), the
        fraction of BN-on steps per chunk, and the learning rate at each chunk's first step."""
        n = len(self.loss)
        edges = np.unique(np.linspace(0, n, min(points, n) + 1).round().astype(int))
        def means(v):
            v = np.asarray(v, dtype=np.float64)
            return [float(f"{m:.6g}") for m in np.add.reduceat(v, edges[:-1]) / np.diff(edges)] if n else []
        return {"n": n, "at": edges[:-1].tolist(), "loss": means(self.loss), "grad_norm": means(self.grad_norm),
                "bn_on": means(self.bn_on), "lr": [float(f"{self.lr[i]:.6g}") for i in edges[:-1]]}

    def metrics(self, steps_per_epoch: int, diverged: bool) -> dict:
        """Stability metrics from the full series (None for a diverged run, whose series ends in
        NaN/inf), and the last epoch's training loss over all steps, BN-on and BN-off steps (None
        where there were no such steps)."""

        loss, on = np.asarray(self.loss, dtype=np.float64), np.asarray(self.bn_on, dtype=bool)
        last, last_on = loss[-steps_per_epoch:], on[-steps_per_epoch:]

        def value(v):  # undefined -> None (JSON null), so that a record equals its stored copy
            return None if v is None or not math.isfinite(v) else float(v)

        return {"loss_volatility": None if diverged else value(loss_volatility(loss)),
                "grad_norm_cv": None if diverged else value(grad_norm_cv(self.grad_norm)),
                "last_epoch_loss": value(last.mean()) if last.size else None,
                "last_epoch_loss_bn_on": value(last[last_on].mean()) if last_on.any() else None,
                "last_epoch_loss_bn_off": value(last[~last_on].mean()) if (~last_on).any() else None}


def _epoch_record(model, cfg, data: TrainingData, epoch: int, loss_sum: float, correct: int, n_steps: int,
                  needs_bn, sel_info: dict) -> dict:
    """One epoch's line of the record: training loss and accuracy on the batches as trained, and
    validation accuracy and loss (None without a validation split)."""
    val_acc, val_loss = (evaluate(model, data.x_val, data.y_val, cfg.eval_batch_size)
                         if data.x_val.shape[0] else (None, None))
    return {"epoch": epoch, "train_loss": loss_sum / n_steps, "train_acc": correct / (n_steps * cfg.batch_size),
            "val_acc": val_acc, "val_loss": val_loss,
            "frac_normalized": float(np.mean(needs_bn)) if needs_bn is not None else 0.0, **sel_info}


def finish_record(cfg, model, data: TrainingData, epochs, log: StepLog, steps_per_epoch: int, status, diverged_at,
                  probe: dict, threshold, n_bn_layers: int, t0: float, loop_time: float, scorer=None) -> dict:
    """The result record of a trained model: final test accuracy (the only time the test set is
    read), inference policies, BN counts, compact step series and their metrics, provenance.
    ``scorer``: the run's batch scorer as fitted for training (None: fitted again here)."""
    test_acc, test_loss = evaluate(model, data.x_test, data.y_test, cfg.eval_batch_size)
    x_probe = data.x_train[:1000]
    inference = {"running_stats_drift": _running_stat_drift(model, x_probe) if n_bn_layers else None}
    if any(True for _ in selective_layers(model)):
        scorer = fit_scorer(cfg.scorer, data.x_train) if scorer is None else scorer
        inference.update(_inference_policies(model, cfg, data.x_test, data.y_test, threshold, scorer))
    n_on, n_steps = int(np.sum(log.bn_on)), len(log)
    counts = bn_counts(model)
    if counts["layers"] == 0:  # plain nn.BatchNorm (or none/gn): every layer ran on every batch
        counts = {"layers": n_bn_layers, "layer_batches_normalized": n_bn_layers * n_steps,
                  "layer_batches_skipped": 0}
    return {
        "schema_version": SCHEMA_VERSION,
        "config": config_dict(cfg),
        "config_hash": config_hash(cfg),
        "status": status,
        "diverged_at_step": diverged_at,
        "final_test_acc": test_acc,
        "final_test_loss": test_loss,
        "final_val_acc": epochs[-1]["val_acc"],
        "final_train_acc": epochs[-1]["train_acc"],
        "epochs": epochs,
        "steps": log.compact(),
        "metrics": log.metrics(steps_per_epoch, status == "diverged"),
        "probe": probe,
        "inference": inference,
        "bn": {**counts, "batches_normalized": n_on if n_bn_layers else 0,
               "batches_skipped": (n_steps - n_on) if n_bn_layers else 0,
               "frac_normalized": (n_on / n_steps) if (n_bn_layers and n_steps) else 0.0},
        "data": {**portable(data.ds.provenance), "n_train_used": int(data.x_train.shape[0]),
                 "n_val": int(data.x_val.shape[0])},
        "produced": produced(),  # the commit and time that made these numbers (tables quote it)
        "wall_time_s": time.perf_counter() - t0,
        "loop_time_s": loop_time,
        "versions": versions(),
        "machine": machine(),  # bitwise reproducible on this CPU; another may round differently
    }
