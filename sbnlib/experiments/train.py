"""A deterministic trainer that fits on a screen.

Data are held as tensors in memory and sliced into batches by a *batch plan* (no per-sample
loader). Before training, every batch of the plan is scored and classified once
(:mod:`sbnlib.scoring`, :mod:`sbnlib.threshold`); during training, step ``i`` runs with the
selective BN layers on or off as batch ``i`` was classified.

The loop (:func:`train`) only steps; what a run measures besides its loss lives in
:mod:`.probes` (shift probe, running-statistics drift, inference policies) and its record in
:mod:`.records`; its configuration is :mod:`.config`.

Same ``seed`` => same initial weights and the same batch order for every method (paired runs),
and bitwise-identical metrics on CPU for the same configuration.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..batches import make_batch_plan
from ..data import load_dataset, validation_split
from ..layers import selective_bn
from ..scoring import fit_scorer, score_batches
from ..threshold import classify_batches, fit_threshold
from .config import METHODS, TrainConfig, lr_at
from .models import build_model
from .probes import _ShiftProbe, switched_layers
from .records import StepLog, _epoch_record, finish_record

__all__ = ["train", "training_data", "TrainingData", "make_optimizer"]


@lru_cache(maxsize=2)
def _prepared(name, root, n_train, n_test, data_seed):
    """Load a dataset once per process and normalise it to float tensors."""
    ds = load_dataset(name, root=root, n_train=n_train, n_test=n_test, seed=data_seed)
    return ds, ds.normalize(ds.x_train), ds.normalize(ds.x_test)


@dataclass
class TrainingData:
    """The tensors one run reads: training, validation (empty when ``val_frac=0``) and test."""

    ds: object  # sbnlib.data.Dataset: provenance, shapes, class count
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def training_data(cfg: "TrainConfig", root=None, dataset=None) -> TrainingData:
    """The data of a run: ``dataset`` (a tuple ``(Dataset, x_train_float, x_test_float)``) or the
    dataset loaded from ``root``; a stratified validation split of ``val_frac`` of the training
    images is held out (:func:`sbnlib.data.validation_split`), so no choice needs the test set."""
    ds, x_train, x_test = dataset or _prepared(cfg.dataset, None if root is None else str(root),
                                               cfg.n_train, cfg.n_test, cfg.data_seed)
    train_idx, val_idx = validation_split(ds.y_train, cfg.val_frac, seed=cfg.data_seed)
    return TrainingData(ds, x_train[train_idx], ds.y_train[train_idx], x_train[val_idx], ds.y_train[val_idx],
                        x_test, ds.y_test)


def make_optimizer(cfg: "TrainConfig", params) -> torch.optim.Optimizer:
    """The run's optimizer at ``cfg.effective_lr``; the schedule sets the rate of every step (:func:`lr_at`)."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.effective_lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.effective_lr, weight_decay=cfg.weight_decay)


def _selection(cfg: TrainConfig, x: torch.Tensor, plan: torch.Tensor, epoch: int, scorer=None):
    """Decide, for every batch of the plan, whether BN runs; returns (mask, info).

    ``scorer``: the run's batch scorer (:func:`sbnlib.scoring.fit_scorer`), by default ``cfg.scorer``
    (a fitted scorer is then fitted on ``x``). Rules: ``score`` normalises the batches above the
    threshold; ``random`` as many at random positions; ``inverse`` as many, the lowest-scoring ones.
    """
    rule = METHODS[cfg.method].selection
    if rule == "all":
        return np.ones(plan.shape[0], dtype=bool), {}
    scores = score_batches(x, cfg.batch_size, cfg.scorer if scorer is None else scorer, order=plan)
    t = fit_threshold(scores, cfg.threshold, q=cfg.threshold_q, rate=cfg.threshold_rate)
    mask = classify_batches(scores, t)
    if rule == "random":  # same number of normalised batches, at random positions
        g = np.random.default_rng([cfg.seed, epoch, 0x5EED])
        mask = mask[g.permutation(mask.size)]
    elif rule == "inverse":  # same number of normalised batches, the least heterogeneous ones (ties: plan order)
        lowest = np.argsort(scores.numpy(), kind="stable")[: int(mask.sum())]
        mask = np.zeros_like(mask)
        mask[lowest] = True
    return mask, {"threshold": t, "score_mean": float(scores.mean()), "score_std": float(scores.std())}


@dataclass
class _Run:
    """What the step loop of one run touches: the model and its optimiser, the selective layers,
    the per-step log and the shift probe."""

    cfg: TrainConfig
    model: torch.nn.Module
    opt: torch.optim.Optimizer
    params: list  # the trainable parameters, for the gradient norm
    sel_layers: list  # the BN layers switched on/off per step (the selection scope)
    log: StepLog
    probe: _ShiftProbe
    total_steps: int


def train(cfg: TrainConfig, root=None, dataset=None, progress: bool = False) -> dict:
    """Run one training run; return its JSON-serialisable result record.

    ``dataset`` may be given as a tuple ``(Dataset, x_train_float, x_test_float)`` to reuse data
    already in memory; otherwise it is loaded from ``root`` (see :func:`sbnlib.data.load_dataset`).
    Validation accuracy is measured after every epoch, test accuracy once, at the end.
    A NaN/inf loss or gradient ends the run with ``status="diverged"`` instead of raising.
    """
    cfg.validate()
    t0 = time.perf_counter()
    data = training_data(cfg, root, dataset)
    x_train = data.x_train
    if cfg.batch_size > x_train.shape[0]:
        raise ValueError(
            f"batch_size={cfg.batch_size} is larger than the {x_train.shape[0]} training samples "
            f"of {cfg.dataset}; lower the batch size"
        )
    torch.manual_seed(cfg.seed)  # same seed => same initial weights for every method
    norm, input_norm = cfg.norms
    model = build_model(cfg.model, data.ds.in_shape, data.ds.num_classes, norm=norm, input_norm=input_norm)
    opt = make_optimizer(cfg, model.parameters())
    n_bn_layers = sum(1 for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))
    plan = make_batch_plan(x_train.shape[0], cfg.batch_size, seed=cfg.seed)
    total_steps = plan.shape[0] * cfg.epochs
    run = _Run(cfg, model, opt, [p for p in model.parameters() if p.requires_grad], switched_layers(model, cfg.scope),
               StepLog(), _ShiftProbe(model, x_train[:256], total_steps, cfg.probe_points), total_steps)
    run.probe.maybe(0)
    # the batch scorer, fitted once on the training inputs where it needs fitting (pre-training work)
    scorer = fit_scorer(cfg.scorer, x_train) if METHODS[cfg.method].selection != "all" else None
    bar = _progress(cfg, total_steps, progress)
    epochs, status, diverged_at = [], "ok", None
    loop_time = 0.0  # seconds in the step loops (with the probe's checkpoints; no selection or evaluation)
    for epoch in range(cfg.epochs):
        if cfg.reform_batches and epoch > 0:  # a new batch order every epoch, re-scored below
            plan = make_batch_plan(x_train.shape[0], cfg.batch_size, seed=cfg.seed, epoch=epoch)
        if epoch == 0 or cfg.reform_batches:  # the selection is made before the steps it governs
            needs_bn, sel_info = _selection(cfg, x_train, plan, epoch, scorer)
        t_loop = time.perf_counter()
        loss_sum, correct, steps, diverged_at = _train_epoch(run, data, plan, needs_bn, bar)
        loop_time += time.perf_counter() - t_loop
        epochs.append(_epoch_record(model, cfg, data, epoch, loss_sum, correct, steps,
                                    needs_bn if n_bn_layers else None, sel_info))
        bar.set_postfix(val_acc=f"{epochs[-1]['val_acc']:.3f}" if epochs[-1]["val_acc"] is not None else "-")
        if diverged_at is not None:
            status = "diverged"
            break
    bar.close()
    return finish_record(cfg, model, data, epochs, run.log, plan.shape[0], status, diverged_at, run.probe.record(),
                         sel_info.get("threshold"), n_bn_layers, t0, loop_time, scorer=scorer)


def _train_epoch(run: _Run, data: TrainingData, plan: torch.Tensor, needs_bn: np.ndarray, bar):
    """One pass over the batch plan; returns (loss sum, correct count, steps taken, the global step
    at which the loss or gradient became NaN/inf or None)."""
    model, opt, log = run.model, run.opt, run.log
    model.train()
    loss_sum, correct = 0.0, 0
    for i in range(plan.shape[0]):
        lr = lr_at(run.cfg, len(log), run.total_steps)
        for group in opt.param_groups:  # the schedule's rate for this step
            group["lr"] = lr
        xb, yb = data.x_train[plan[i]], data.y_train[plan[i]]  # the plan holds each batch's indices
        with selective_bn(run.sel_layers, enabled=bool(needs_bn[i])):  # BN on or off, as decided before training
            out = model(xb)
        loss = F.cross_entropy(out, yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.get_total_norm([p.grad for p in run.params if p.grad is not None])
        lv, gv = loss.item(), gnorm.item()
        log.add(lv, gv, bool(needs_bn[i]), lr)
        if not (math.isfinite(lv) and math.isfinite(gv)):  # diverged: stop before the step spreads NaNs
            return loss_sum, int(correct), i + 1, len(log) - 1
        opt.step()
        run.probe.maybe(len(log))  # the shift probe's checkpoints fall on fixed global steps
        loss_sum += lv
        correct += (out.argmax(1) == yb).sum()  # a tensor: one .item() per epoch
        bar.update(1)
    return loss_sum, int(correct), plan.shape[0], None


def _progress(cfg: TrainConfig, total: int, enabled: bool):

    return tqdm(total=total, disable=not enabled, leave=False, unit="step",
                desc=f"{cfg.dataset} {cfg.method} B={cfg.batch_size} seed={cfg.seed}")
