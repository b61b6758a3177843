"""Run-level metrics, numpy only (the trainer computes them while a run trains, without the
experiment extras): loss volatility, gradient-norm CV, and :func:`run_metrics`, which flattens one
result record into a row for the tables of :mod:`sbnlib.experiments.stats`.
"""
from __future__ import annotations

import numpy as np

_NAN = float("nan")


# ------------------------------------------------------------------------------------------------
# Run-level stability metrics
# ------------------------------------------------------------------------------------------------

def loss_volatility(losses) -> float:
    """Std (ddof=0) of the step-to-step loss changes, ``std(np.diff(loss))``.

    Measures how jumpy training is, independent of the loss level. NaN when there are fewer than
    2 steps or any loss is non-finite (a diverged run).
    """
    x = np.asarray(losses, dtype=np.float64).ravel()
    if x.size < 2 or not np.all(np.isfinite(x)):
        return _NAN
    return float(np.std(np.diff(x)))


def grad_norm_cv(grad_norms) -> float:
    """Coefficient of variation of the per-step gradient norms, ``std(g) / mean(g)`` (ddof=0).

    NaN when empty, any value is non-finite, or the mean is 0.
    """
    g = np.asarray(grad_norms, dtype=np.float64).ravel()
    if g.size == 0 or not np.all(np.isfinite(g)):
        return _NAN
    mu = g.mean()
    if mu == 0:
        return _NAN
    return float(np.std(g) / mu)


def _mean_finite_or_nan(values) -> float:
    x = np.asarray(values if values is not None else [], dtype=np.float64).ravel()
    if x.size == 0 or not np.all(np.isfinite(x)):
        return _NAN
    return float(x.mean())


def run_metrics(result: dict) -> dict:
    """Flatten one :func:`sbnlib.experiments.train.train` result record into accuracy and stability metrics.

    Keys: ``final_test_acc``, ``final_val_acc`` (NaN without a validation split),
    ``final_train_acc`` (the last epoch's batches as trained), ``val_gain_last2`` (validation
    accuracy gained over the last two epochs; NaN with fewer than three epochs),
    ``loss_volatility`` and ``grad_norm_cv`` (:func:`loss_volatility` and :func:`grad_norm_cv`,
    computed by the trainer from the full per-step series: ``metrics``), ``ics_shift`` (mean of
    ``probe.shift``; NaN if the probe is absent, empty or has a non-finite value),
    ``bn_transformations`` (``bn.layer_batches_normalized``: layer x batch normalisations
    performed), ``frac_normalized`` (``bn.frac_normalized``), ``diverged`` (``status ==
    "diverged"``); from ``inference`` (NaN where absent): ``acc_running``, ``acc_bypass``,
    ``acc_selected`` (test accuracy under each inference policy) and ``running_stats_drift``.

    For a diverged run the step metrics (``loss_volatility``, ``grad_norm_cv``, ``ics_shift``) and
    ``running_stats_drift`` are NaN (they would describe a truncated run ending in NaN/inf);
    ``final_test_acc`` and the BN counts are kept as recorded.
    """
    diverged = result.get("status") == "diverged"
    metrics = result.get("metrics", {})
    bn = result.get("bn", {})
    probe = result.get("probe") or {}
    val = [e.get("val_acc") for e in result.get("epochs", [])]
    row = {
        "final_test_acc": float(result["final_test_acc"]),
        "final_val_acc": _NAN if val[-1:] in ([], [None]) else float(val[-1]),
        "final_train_acc": float(result["final_train_acc"]),
        "val_gain_last2": (float(val[-1] - val[-3]) if len(val) >= 3 and None not in val[-3:] and not diverged
                           else _NAN),
        "loss_volatility": _NAN if diverged or metrics.get("loss_volatility") is None else float(metrics["loss_volatility"]),
        "grad_norm_cv": _NAN if diverged or metrics.get("grad_norm_cv") is None else float(metrics["grad_norm_cv"]),
        "ics_shift": _NAN if diverged else _mean_finite_or_nan(probe.get("shift")),
        "bn_transformations": int(bn["layer_batches_normalized"]),
        "frac_normalized": float(bn["frac_normalized"]),
        "diverged": bool(diverged),
    }
    # inference policies of selective BN, and the drift of the running statistics (a step-like metric:
    # NaN for a diverged run, like the step metrics above)
    inference = result.get("inference") or {}
    for key, col in (("running", "acc_running"), ("bypass", "acc_bypass"), ("selected", "acc_selected")):
        v = inference.get(key)
        row[col] = _NAN if v is None else float(v)
    drift = inference.get("running_stats_drift")
    row["running_stats_drift"] = _NAN if diverged or drift is None else float(drift)
    return row
