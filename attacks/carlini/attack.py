"""The Carlini et al. attack on InstaHide as one registered Attack: ``carlini``.

Carlini, Deng, Garg, Jha, Mahloujifar, Mahmoody, Song, Thakurta, Tramer, "An Attack on
InstaHide: Is Private Learning Possible with Instance Encoding?" (arXiv 2011.05315).

    stages 1-3  grouping     which private images each encryption mixes (grouping.py)
    stage 4     regression   private images up to one sign per pixel position (regression.py)
    stage 5     signs        that sign, from smoothness + aux statistics (signs.py)
    stage 6     decryption   per encryption, the recovered image of its heavier private slot

Each stage is cached on disk (StageCache) keyed by its config, the release's fingerprint and
the upstream stages, so a rerun resumes from the first stage whose inputs changed. Oracle
modes ('pairs', 'assignment', 'lambdas') replace a stage's input by the key's truth and are
part of the cache key.
"""
from __future__ import annotations

import hashlib
import json
import resource
import time
from dataclasses import dataclass, field

import numpy as np

from attacks.base import Attack, AttackResult, Oracle, register, validate_config
from attacks.carlini.regression import RegressionConfig, lambdas_from_labels, regress, torch_device
from attacks.carlini.signs import SignConfig, aux_statistics, fix_global_signs
from hidebench.stage_cache import StageCache
from hidebench.types import HidebenchError, PublicView, SecretKey

# Label entries below this are absent (coefficients are >= ~1e-3 in practice).
LABEL_EPS = 1e-6


def _grouping_config_cls():
    from attacks.carlini.grouping import GroupingConfig  # lazy: stages 1-3 live in their own module

    return GroupingConfig


def _default_grouping():
    return _grouping_config_cls()()


@dataclass
class CarliniConfig:
    """Configuration of the whole attack; nested sections validate their own keys.

    aux_max: auxiliary images loaded at most (a strided, class-balanced subset of the aux
    source), used to train the similarity model and as the sign prior. seed: all randomness.
    """

    grouping: object = field(default_factory=_default_grouping)
    regression: RegressionConfig = field(default_factory=RegressionConfig)
    signs: SignConfig = field(default_factory=SignConfig)
    aux_max: int = 4000
    colour: str = "auto"
    seed: int = 0

    def __post_init__(self):
        GroupingConfig = _grouping_config_cls()
        if isinstance(self.grouping, dict) or self.grouping is None:
            self.grouping = GroupingConfig.from_dict(self.grouping)
        elif not isinstance(self.grouping, GroupingConfig):
            raise HidebenchError(f"carlini.grouping must be a table of grouping keys, got {type(self.grouping).__name__}")
        for name, cls in (("regression", RegressionConfig), ("signs", SignConfig)):
            v = getattr(self, name)
            if isinstance(v, dict) or v is None:
                setattr(self, name, validate_config(cls, v))
            elif not isinstance(v, cls):
                raise HidebenchError(f"carlini.{name} must be a table of {name} keys, got {type(v).__name__}")
        if int(self.aux_max) != self.aux_max or self.aux_max < 1:
            raise HidebenchError(f"carlini.aux_max must be a positive integer, got {self.aux_max}")
        if self.colour not in ("auto", "grey", "rgb"):
            raise HidebenchError(f"carlini.colour must be 'auto', 'grey' or 'rgb', got {self.colour!r}")
        if int(self.seed) != self.seed or self.seed < 0:
            raise HidebenchError(f"carlini.seed must be a non-negative integer, got {self.seed}")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def view_fingerprint(view: PublicView) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(view.encryptions).tobytes())
    h.update(np.ascontiguousarray(view.labels).tobytes())
    h.update(json.dumps([view.k, view.mode, view.scheme, view.T]).encode())
    return h.hexdigest()[:16]


def check_release(view: PublicView) -> int:
    """Validate what the attack needs from a release; return the number of private images."""
    E = len(view)
    if not view.T:
        raise HidebenchError("the release does not state T (encryptions per private image); the attack needs it")
    if E % view.T:
        raise HidebenchError(f"{E} encryptions is not a multiple of T={view.T}")
    n = E // view.T
    slots = view.n_private_slots
    if n < slots:
        raise HidebenchError(f"{n} private images cannot fill {slots} private slots per encryption")
    if view.encryptions.shape[1:] != (32, 32, 3):
        raise HidebenchError(f"encryptions must be E x 32 x 32 x 3, got {view.encryptions.shape}")
    nnz = (view.labels > LABEL_EPS).sum(1)
    if nnz.max() > slots:
        raise HidebenchError(f"labels have up to {int(nnz.max())} nonzero entries, but k={view.k} {view.mode}-dataset "
                             f"mixes only {slots} private images: does k/mode match the release?")
    if nnz.min() < 1:
        raise HidebenchError(f"{int((nnz < 1).sum())} label rows have no nonzero entry")
    tot = view.labels.sum(1)
    if view.mode == "inside" and np.abs(tot - 1).max() > 1e-3:
        raise HidebenchError("inside-dataset labels must sum to 1 per row")
    if tot.max() > 1 + 1e-3:
        raise HidebenchError(f"label rows sum to up to {tot.max():.4f} > 1: not InstaHide coefficients")
    return n


def _pack_json(d) -> np.ndarray:
    return np.asarray(json.dumps(d, default=lambda o: o.item() if isinstance(o, np.generic) else str(o)))


def _unpack_json(a) -> dict:
    return json.loads(str(a))


@register
class Carlini(Attack):
    """Carlini et al. 2020: similarity -> clusters -> assignment -> regression -> signs -> decryption."""

    name = "carlini"
    Config = CarliniConfig

    def __init__(self, config=None, threat=None):
        if isinstance(config, dict):
            config = validate_config(CarliniConfig, config)
        super().__init__(config, threat)

    # ------------------------------------------------------------------ helpers
    def _load_aux(self):
        if not self.threat.aux:
            return None
        from hidebench.data import load_source, source_size

        n = source_size(self.threat.aux)
        m = min(n, self.config.aux_max)
        idx = np.unique(np.linspace(0, n - 1, m).round().astype(np.int64))   # strided: class-balanced
        return load_source(self.threat.aux, indices=idx)

    def _build_pool(self, pool_cfg: dict | None, progress: bool):
        """The attacker's own draw from the public pool (same source and SIFT filter as the
        release's recipe, its own random regions): granted only by ThreatModel.public_pool."""
        if not pool_cfg:
            return None
        from hidebench.data import PoolConfig, build_pool

        return build_pool(PoolConfig(**pool_cfg), np.random.default_rng([self.config.seed, 1]), progress=progress)

    def run(self, view: PublicView, *, oracle: Oracle | None = None, cache_dir=None, progress: bool = True) -> AttackResult:
        from tqdm import tqdm

        cfg = self.config
        oracle = oracle or Oracle(None, ())
        n = check_release(view)
        cache = StageCache(cache_dir)
        fp = view_fingerprint(view)
        timings: dict = {}
        stats: dict = {"n_private": n, "oracles": list(oracle.granted)}
        bar = tqdm(total=4, desc="carlini", disable=not progress)
        aux_cache: list = []

        def aux():
            if not aux_cache:
                t0 = time.perf_counter()
                aux_cache.append(self._load_aux())
                timings["load_aux_s"] = time.perf_counter() - t0
            return aux_cache[0]

        # ---- stages 1-3: grouping (or the key's assignment under oracle 'assignment')
        t0 = time.perf_counter()
        if "assignment" in oracle:
            key = oracle.get("assignment")
            self._check_key(key, view)
            g_arrays = {"assignment": key.private_of().astype(np.int64),
                        "cluster_class": key.private_labels.astype(np.int64),
                        "stats": _pack_json({"oracle": "assignment"}), "timings": _pack_json({})}
            cache.hits["grouping"] = False
        else:
            from attacks.carlini.grouping import find_groups

            pairs_key = oracle.get("pairs") if "pairs" in oracle else None
            pool_cfg = self.threat.pool if self.threat.public_pool else None
            g_cfg = {"grouping": cfg.grouping.to_dict(), "view": fp, "seed": cfg.seed, "aux": self.threat.aux,
                     "aux_max": cfg.aux_max, "oracle_pairs": pairs_key is not None, "pool": pool_cfg}

            def compute_grouping():
                pool = self._build_pool(pool_cfg, progress)
                gr = find_groups(view, cfg.grouping, aux(), pool=pool, seed=cfg.seed, cache=cache, progress=progress,
                                 true_pairs_key=pairs_key)
                out = {"assignment": gr.assignment, "cluster_class": gr.cluster_class,
                       "stats": _pack_json(gr.stats), "timings": _pack_json(gr.timings)}
                out.update({f"ps_{k}": np.asarray(v) for k, v in gr.pair_sample.items()})
                return out

            g_arrays = cache.get_or_compute("grouping", g_cfg, compute_grouping)
        timings["grouping_s"] = time.perf_counter() - t0
        timings["grouping_peak_rss_mb"] = _peak_rss_mb()
        timings.update({f"grouping.{k}": v for k, v in _unpack_json(g_arrays["timings"]).items()})
        stats["grouping"] = _unpack_json(g_arrays["stats"])
        assignment = np.asarray(g_arrays["assignment"], dtype=np.int64)
        cluster_class = np.asarray(g_arrays["cluster_class"], dtype=np.int64)
        if assignment.shape != (len(view), view.n_private_slots):
            raise HidebenchError(f"grouping returned an assignment of shape {assignment.shape}, expected "
                                 f"({len(view)}, {view.n_private_slots})")
        bar.update(1)

        # ---- coefficients: from the labels (or the key under oracle 'lambdas')
        if "lambdas" in oracle:
            key = oracle.get("lambdas")
            self._check_key(key, view)
            lam, split = self._oracle_lambdas(key, assignment, view, cluster_class)
        else:
            lam, split = lambdas_from_labels(view.labels, assignment, cluster_class)
        stats["split_encryptions"] = int(split.sum())

        # ---- colour: grey images -> channels as extra observations of one channel
        grey = cfg.colour == "grey"
        if cfg.colour == "auto" and self.threat.aux:
            ax = aux().images
            grey = bool(np.abs(ax - ax[..., :1]).max() < 2 / 255)
        stats["colour"] = "grey" if grey else "rgb"

        # ---- stage 4: regression
        t0 = time.perf_counter()
        upstream = hashlib.sha256(assignment.tobytes() + lam.tobytes() + split.tobytes()).hexdigest()[:16]
        r_cfg = {"regression": cfg.regression.to_dict(), "view": fp, "upstream": upstream, "grey": grey}

        rounds = 1
        if ("assignment" not in oracle and view.scheme == "instahide" and view.n_private_slots == 2):
            rounds += cfg.regression.reassign
        r_cfg["rounds"] = rounds
        lam_key = oracle.get("lambdas") if "lambdas" in oracle else None

        def solve(A, L, sp, wts=None):
            if grey:
                C = view.encryptions.shape[-1]
                enc = np.moveaxis(view.encryptions, 3, 0).reshape((C * len(view),) + view.encryptions.shape[1:3] + (1,))
                res = regress(enc, np.tile(A, (C, 1)), np.tile(L, (C, 1)), n, scheme=view.scheme,
                              split=np.tile(sp, C), cfg=cfg.regression, progress=progress,
                              weights=None if wts is None else np.tile(wts, C))
                res.lambdas = res.lambdas.reshape(C, len(view), -1).mean(0)
                res.images = np.repeat(res.images, C, axis=-1)
                res.noise_mean = np.repeat(res.noise_mean, C, axis=-1)
                res.noise_energy = np.repeat(res.noise_energy, C, axis=-1)
                res.stages = {k: np.repeat(v, C, axis=-1) for k, v in res.stages.items()}
                return res
            return regress(view.encryptions, A, L, n, scheme=view.scheme, split=sp, cfg=cfg.regression,
                           progress=progress, weights=wts)

        def compute_regression():
            from attacks.carlini.regression import reassign

            A, L, sp = assignment, lam, split
            res = solve(A, L, sp)
            changed = []
            for _ in range(rounds - 1):
                # regression-driven reassignment (EM-style): move encryptions to the pair that explains them
                newA, margin = reassign(view.encryptions, view.labels, cluster_class, res.images, res.noise_mean,
                                        candidates=cfg.regression.reassign_candidates,
                                        device=str(torch_device(cfg.regression.device)))
                # confidence of each row's new pair: fit margin over the runner-up, m / (m + median)
                wts = margin / (margin + max(float(np.median(margin)), 1e-9)) if cfg.regression.margin_weights else None
                changed.append(float((np.sort(newA, 1) != np.sort(A, 1)).any(1).mean()))
                A = newA
                if lam_key is not None:
                    L, sp = self._oracle_lambdas(lam_key, A, view, cluster_class)
                else:
                    L, sp = lambdas_from_labels(view.labels, A, cluster_class)
                res = solve(A, L, sp, wts)
            st = dict(res.stats, reassign_changed_fraction=changed)
            if grey:
                st["colour"] = "grey"
            out = {"images": res.images[..., :1] if grey else res.images, "lambdas": res.lambdas,
                   "noise_mean": res.noise_mean, "noise_energy": res.noise_energy, "stats": _pack_json(st),
                   "assignment": A, "lambdas_from_labels": L, "split": sp}
            out.update({f"stage_{k}": v for k, v in res.stages.items()})
            return out

        reg = cache.get_or_compute("regression", r_cfg, compute_regression)
        timings["regression_s"] = time.perf_counter() - t0
        timings["regression_peak_rss_mb"] = _peak_rss_mb()
        stats["regression"] = _unpack_json(reg["stats"])
        assignment_in = assignment
        assignment = np.asarray(reg["assignment"], dtype=np.int64)
        stats["split_encryptions"] = int(reg["split"].sum())
        bar.update(1)

        # ---- stage 5: one sign per pixel position (InstaHide only)
        t0 = time.perf_counter()
        if view.scheme == "instahide":
            s_cfg = {"signs": cfg.signs.to_dict(), "upstream": r_cfg, "aux": self.threat.aux, "aux_max": cfg.aux_max}

            def compute_signs():
                x, sst = fix_global_signs(reg["images"], cfg.signs, st)
                return {"images": x, "stats": _pack_json(sst)}

            st = aux_statistics(aux().images) if self.threat.aux else None
            st_full = st
            if grey and st is not None:
                st = (st[0][..., :1], st[1][..., :1])
            sg = cache.get_or_compute("signs", s_cfg, compute_signs, upstream=[cache.digests["regression"]])
            recovered = sg["images"]
            stats["signs"] = _unpack_json(sg["stats"])
            sign_prior = (cfg.signs, st_full)
        else:
            recovered = reg["images"]
            sign_prior = None
        regressed = reg["images"]
        if grey:
            recovered = np.repeat(recovered, 3, axis=-1)
            regressed = np.repeat(regressed, 3, axis=-1)
        recovered = np.clip(recovered, -1, 1).astype(np.float32)
        timings["signs_s"] = time.perf_counter() - t0
        timings["signs_peak_rss_mb"] = _peak_rss_mb()
        bar.update(1)

        # ---- stage 6: decryption = recovered image of each encryption's heavier private slot
        t0 = time.perf_counter()
        lam_hat = reg["lambdas"]
        heavier = assignment[np.arange(len(view)), np.argmax(lam_hat, axis=1)]
        decryption = recovered[heavier]
        timings["decryption_s"] = time.perf_counter() - t0
        timings["peak_rss_mb"] = _peak_rss_mb()
        try:
            import torch

            if torch.cuda.is_available():
                timings["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
        except ImportError:
            pass
        bar.update(1)
        bar.close()
        stats["cache_hits"] = dict(cache.hits)

        result = AttackResult(decryption=decryption.astype(np.float32), recovered=recovered, stats=stats,
                              timings=timings)
        # for evaluate(): intermediate arrays, not part of the JSON record
        result.carlini = {"grouping": g_arrays, "assignment": assignment, "assignment_grouping": assignment_in,
                          "lambdas": lam_hat, "split": reg["split"], "lambdas_from_labels": reg["lambdas_from_labels"], "stages": {k[6:]: v for k, v in reg.items() if k.startswith("stage_")},
                          "regressed": regressed, "oracle_assignment": "assignment" in oracle,
                          "n_clusters": n, "sign_prior": sign_prior}
        return result

    @staticmethod
    def _check_key(key: SecretKey, view: PublicView):
        if key.selection.shape[0] != len(view) or key.n_private_slots != view.n_private_slots:
            raise HidebenchError("the oracle key does not match the release (encryptions or private slots differ)")

    @staticmethod
    def _oracle_lambdas(key: SecretKey, assignment, view, cluster_class):
        """True coefficients, put in the assignment's slot order (clusters mapped to private
        images by co-membership); slots whose cluster is not in the row keep the label reading."""
        priv = key.private_of()
        true = key.lambdas[:, : key.n_private_slots]
        n = len(key.private)
        co = np.zeros((assignment.max() + 1, n))
        for j in range(assignment.shape[1]):
            for i in range(priv.shape[1]):
                np.add.at(co, (assignment[:, j], priv[:, i]), 1)
        match = co.argmax(1)
        lam, split = lambdas_from_labels(view.labels, assignment, cluster_class)
        for j in range(assignment.shape[1]):
            hit = priv == match[assignment[:, j]][:, None]          # private slots are distinct per row
            rows = np.flatnonzero(hit.any(1))
            lam[rows, j] = true[rows, hit[rows].argmax(1)]
        return lam.astype(np.float32), np.zeros(len(lam), dtype=bool)

    # ------------------------------------------------------------------ scoring with the key
    def evaluate(self, result: AttackResult, key: SecretKey) -> dict:
        """Stage metrics with the key: grouping (pair AUC, precision@T, purity, recall,
        assignment accuracy), lambda error, and the Hungarian-matched SSIM of the private set
        after each recovery step, with two oracle references (true global sign per position,
        true sign of every pixel)."""
        from hidebench.metrics import matched_set_metric, ssim

        c = getattr(result, "carlini", None)
        if c is None:
            return {}
        out: dict = {}
        A = c["assignment"]
        if c["oracle_assignment"]:
            match = np.arange(c["n_clusters"])
            out["grouping"] = {"oracle": "assignment", "assignment_accuracy": 1.0}
        else:
            from attacks.carlini.grouping import Grouping, evaluate_grouping

            g = c["grouping"]
            ps = {k[3:]: (g[k].item() if g[k].ndim == 0 else g[k]) for k in g if k.startswith("ps_")}
            gr = Grouping(assignment=c["assignment_grouping"], n_clusters=c["n_clusters"],
                          cluster_class=g["cluster_class"], pair_sample=ps)
            out["grouping"] = evaluate_grouping(gr, key)
            final = evaluate_grouping(Grouping(assignment=A, n_clusters=c["n_clusters"],
                                               cluster_class=g["cluster_class"]), key)
            out["after_reassign"] = {k: final[k] for k in ("assignment_accuracy", "rows_all_correct", "group_purity",
                                                           "group_recall") if k in final}
            match = np.asarray(final["cluster_to_private"])
        # lambda error on slots whose cluster maps to a private image in that encryption
        priv = key.private_of()
        true = key.lambdas[:, : key.n_private_slots]
        errs, errs_split, errs_labels = [], [], []
        for j in range(A.shape[1]):
            hit = priv == match[A[:, j]][:, None]                    # private slots are distinct per row
            rows = np.flatnonzero(hit.any(1))
            if not len(rows):
                continue
            t = true[rows, hit[rows].argmax(1)]
            e = np.abs(c["lambdas"][rows, j] - t)
            errs.append(e)
            errs_labels.append(np.abs(c["lambdas_from_labels"][rows, j] - t))
            errs_split.append(e[c["split"][rows]])
        if errs:
            out["lambda_mae"] = float(np.concatenate(errs).mean())
            out["lambda_mae_labels_only"] = float(np.concatenate(errs_labels).mean())
            es = np.concatenate(errs_split)
            out["lambda_mae_split"] = float(es.mean()) if len(es) else None
            out["split_fraction"] = float(c["split"].mean())
        # SSIM after each step (Hungarian-matched to the private set)
        T = key.private
        steps = dict(c["stages"])
        steps["regressed"] = c["regressed"]
        steps["final"] = result.recovered
        ok = match >= 0
        Tm = T[match[ok]]

        def oracle_global(x):
            g = np.sign((x * Tm).sum(0))
            g[g == 0] = 1
            return x * g

        # each step as the attacker would finish it (stage-5 signs), and with the true sign per
        # position (what the step got right up to the one unidentifiable sign per position)
        ssim_out, ssim_oracle_global = {}, {}
        for name, x in steps.items():
            if name != "final" and c["sign_prior"] is not None:
                x, _ = fix_global_signs(x, *c["sign_prior"])
            ssim_out[name] = matched_set_metric(np.clip(x, -1, 1), T)["ssim"]
            if name != "final":
                ssim_oracle_global[name] = float(ssim(np.clip(oracle_global(x[ok]), -1, 1), Tm).mean())
        Xr = c["regressed"][ok]
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
