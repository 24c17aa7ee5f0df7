"""Stage metrics of a fusion run, computed with the key after the run (scorer side).

`grouping`: hidebench.attacks.grouping.groups.evaluate_grouping (pair AUC of the similarity,
precision@T, core and group purity, assignment accuracy, ...). `similarity_network`: the pair
AUC and precision@T of the trained similarity network alone (the comparative network, without
the Pearson blend the grouping may add). `fusion`: the SSIM of each
group's fused image against the private image the group is matched to (the grouping's
Hungarian matching), overall, by group size (bins in units of T) and by group purity (the share
of a group's members that hold its matched image): what the fusion network makes of groups as
large and as pure as the grouping gives it.
"""
from __future__ import annotations

import numpy as np

from hidebench.attacks.grouping.groups import Grouping, evaluate_grouping, pair_metrics
from hidebench.attacks.grouping.membership import membership_matrix
from hidebench.types import SecretKey

SIZE_BINS = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, np.inf)        # group size / T
PURITY_BINS = (0.0, 0.25, 0.5, 0.75, 0.9, 1.0001)


def _binned(values: np.ndarray, by: np.ndarray, edges, fmt) -> dict:
    out = {}
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (by >= lo) & (by < hi)
        if sel.any():
            out[fmt(lo, hi)] = {"ssim": round(float(values[sel].mean()), 4), "groups": int(sel.sum())}
    return out


def evaluate_fusion(grouping: Grouping, images: np.ndarray, key: SecretKey, T: int,
                    network: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
    """{'grouping': ..., 'fusion': {ssim, ssim_by_size, ssim_by_purity, mean_purity}} and, given
    the network's own rows (anchors, anchors x E scores), 'similarity_network' (module docstring)."""
    from hidebench.metrics import ssim

    g = evaluate_grouping(grouping, key)
    match = np.asarray(g["cluster_to_private"])
    ok = np.flatnonzero(match >= 0)
    A = np.asarray(grouping.assignment, dtype=np.int64)
    G = membership_matrix(A, int(grouping.n_clusters))                       # E x groups
    M = membership_matrix(key.private_of(), len(key.private))               # E x images
    sizes = G.sum(0)
    holds = (G[:, ok] & M[:, match[ok]]).sum(0)
    purity = holds / np.maximum(sizes[ok], 1)
    s = ssim(np.clip(images[ok], -1, 1), key.private[match[ok]])
    fusion = {"ssim": float(s.mean()),
              "ssim_by_size": _binned(s, sizes[ok] / T, SIZE_BINS,
                                      lambda lo, hi: f"{lo:g}T-{hi:g}T" if np.isfinite(hi) else f">={lo:g}T"),
              "ssim_by_purity": _binned(s, purity, PURITY_BINS, lambda lo, hi: f"{lo:g}-{min(hi, 1):g}"),
              "mean_purity": float(purity.mean())}
    out = {"grouping": g, "fusion": fusion}
    if network is not None:
        out["similarity_network"] = pair_metrics(network[0], network[1], M, T)
    return out
