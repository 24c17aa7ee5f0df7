"""Stage metrics of a Carlini attack run, computed with the key after the run (scorer side).

The names are those the records and the benchmarks report: `grouping` (evaluate_grouping:
pair_auc, precision_at_T, core_purity, assignment_accuracy, ...), `after_reassign`,
`lambda_mae` (+ `_labels_only`, `_split`, `split_fraction`), `ssim_by_step`,
`ssim_by_step_oracle_global_sign` and `relative_sign_accuracy`.
"""
from __future__ import annotations

import numpy as np

from hidebench.attacks.grouping.groups import Grouping, evaluate_grouping
from hidebench.types import SecretKey


def _lambda_errors(A: np.ndarray, match: np.ndarray, regression, key: SecretKey) -> dict:
    """Coefficient error on the slots whose group maps to a private image of that encryption."""
    if key.lambdas is None:
        return {}
    priv = key.private_of()
    true = key.lambdas[:, : key.n_private_slots]
    errs, errs_split, errs_labels = [], [], []
    split = np.asarray(regression.split, dtype=bool)
    for j in range(A.shape[1]):
        hit = priv == match[A[:, j]][:, None]                    # private slots are distinct per row
        rows = np.flatnonzero(hit.any(1))
        if not len(rows):
            continue
        t = true[rows, hit[rows].argmax(1)]
        e = np.abs(regression.lambdas[rows, j] - t)
        errs.append(e)
        errs_labels.append(np.abs(regression.lambdas_from_labels[rows, j] - t))
        errs_split.append(e[split[rows]])
    if not errs:
        return {}
    es = np.concatenate(errs_split)
    return {"lambda_mae": float(np.concatenate(errs).mean()),
            "lambda_mae_labels_only": float(np.concatenate(errs_labels).mean()),
            "lambda_mae_split": float(es.mean()) if len(es) else None,
            "split_fraction": float(split.mean())}


def evaluate_run(artifacts: dict, recovered: np.ndarray, key: SecretKey) -> dict:
    """Grouping metrics (before and after the reassignment rounds), coefficient error, and the
    Hungarian-matched SSIM of the private set after each recovery step: as the attacker would
    finish it (stage-5 signs), and with the true sign per position (what the step got right up
    to the one sign per position it cannot identify)."""
    from hidebench.attacks.carlini.global_signs import fix_global_signs
    from hidebench.metrics import matched_set_metric, ssim

    g: Grouping = artifacts["grouping"]
    reg = artifacts["regression"]
    A = np.asarray(reg.assignment)
    out: dict = {}
    if artifacts["oracle_assignment"]:
        out["grouping"] = {"oracle": "assignment", **evaluate_grouping(g, key)}
        match = np.asarray(out["grouping"]["cluster_to_private"])
    else:
        out["grouping"] = evaluate_grouping(g, key)
        final = evaluate_grouping(Grouping(assignment=A, cluster_class=reg.cluster_class, n_clusters=g.n_clusters),
                                  key)
        out["after_reassign"] = {k: final[k] for k in ("assignment_accuracy", "rows_all_correct", "group_purity",
                                                       "group_recall") if k in final}
        match = np.asarray(final["cluster_to_private"])
    out.update(_lambda_errors(A, match, reg, key))

    T = key.private
    steps = dict(reg.steps)
    steps["regressed"] = artifacts["regressed"]
    steps["final"] = recovered
    ok = match >= 0
    Tm = T[match[ok]]

    def oracle_global(x):
        s = np.sign((x * Tm).sum(0))
        s[s == 0] = 1
        return x * s

    prior = artifacts["sign_prior"]
    ssim_out, ssim_oracle_global = {}, {}
    for name, x in steps.items():
        if name != "final" and prior is not None:
            x, _ = fix_global_signs(x, *prior)
        ssim_out[name] = matched_set_metric(np.clip(x, -1, 1), T)["ssim"]
        if name != "final":
            ssim_oracle_global[name] = float(ssim(np.clip(oracle_global(x[ok]), -1, 1), Tm).mean())
    Xr = artifacts["regressed"][ok]
    ssim_oracle_global["magnitudes_with_true_signs"] = float(
        ssim(np.clip(np.abs(steps["magnitudes"][ok]) * np.sign(Tm), -1, 1), Tm).mean())
    ssim_oracle_global["regressed_with_true_signs"] = float(ssim(np.clip(np.abs(Xr) * np.sign(Tm), -1, 1), Tm).mean())
    w = np.abs(Tm)
    out["relative_sign_accuracy"] = {
        name: float(((np.sign(oracle_global(steps[name][ok])) == np.sign(Tm)) * w).sum() / w.sum())
        for name in steps if name not in ("magnitudes", "final")}
    out["ssim_by_step"] = ssim_out
    out["ssim_by_step_oracle_global_sign"] = ssim_oracle_global
    return out
