"""Groups of encryptions, as the fusion network reads them: the attacker's simulated groups
(its training data) and the release's groups (what a grouping found).

A group is the set of encryptions that hold one private image, each with its coefficient as the
attacker reads it from the label row (hidebench.attacks.grouping.membership.lambdas_from_labels:
the label entry of the group's class, shared evenly when both private images of a row have that
class). Both kinds are handed to the network packed (`PackedGroups`): every member's row, its
coefficient and the index of its group.

Simulated groups (Luo et al., AAAI 2022, train the fusion network on the attacker's own
encryptions): a round encrypts some aux images T times each with the release's public scheme,
augmentation included (AttackerEncryptions), and a group of one of those images takes a random
number of the encryptions that hold it and a random share of encryptions that do not (whose
labels name the image's class, as every member of a release's group does), since the release's
groups come from an imperfect grouping.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hidebench.attacks.attacker_data import AttackerEncryptions
from hidebench.attacks.fdn.config import SimulatedGroupsConfig
from hidebench.attacks.grouping.membership import label_support, lambdas_from_labels

# A member's shift where nobody knows it (the release's members; simulated members of other images).
UNKNOWN_SHIFT = -100


@dataclass
class PackedGroups:
    """rows: the members (indices into some encryptions), coef: their coefficients, other: the
    rest of their label row's private weight (the partner images'), group: the index of each
    member's group in 0..n_groups-1; classes: each group's class (-1 unknown); shifts: N x 2
    (dy, dx) of the group's image in each member where known (simulated groups), else
    UNKNOWN_SHIFT."""

    rows: np.ndarray
    coef: np.ndarray
    other: np.ndarray
    group: np.ndarray
    classes: np.ndarray
    shifts: np.ndarray | None = None

    @property
    def n_groups(self) -> int:
        return len(self.classes)

    def sizes(self) -> np.ndarray:
        return np.bincount(self.group, minlength=self.n_groups)

    def select(self, groups: np.ndarray) -> PackedGroups:
        """The given groups only, renumbered 0..len(groups)-1 in that order."""
        new = np.full(self.n_groups, -1, dtype=np.int64)
        new[groups] = np.arange(len(groups))
        keep = np.flatnonzero(new[self.group] >= 0)
        keep = keep[np.argsort(new[self.group[keep]], kind="stable")]
        return PackedGroups(self.rows[keep], self.coef[keep], self.other[keep], new[self.group[keep]],
                            np.asarray(self.classes)[groups], None if self.shifts is None else self.shifts[keep])


def release_groups(labels: np.ndarray, assignment: np.ndarray, cluster_class: np.ndarray,
                   n_groups: int) -> PackedGroups:
    """The groups of a grouping (E x slots group ids): every (encryption, slot) is a member of
    its group with the slot's coefficient from the labels."""
    A = np.asarray(assignment, dtype=np.int64)
    lam, _ = lambdas_from_labels(labels, A, cluster_class)
    rows = np.repeat(np.arange(len(A)), A.shape[1])
    group = A.ravel()
    order = np.argsort(group, kind="stable")
    coef = lam.ravel()[order].astype(np.float32)
    return PackedGroups(rows[order], coef, other_weight(labels, rows[order], coef), group[order],
                        np.asarray(cluster_class, dtype=np.int64)[:n_groups])


def other_weight(labels: np.ndarray, rows: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """The private weight of each member's label row beyond its own coefficient."""
    return np.clip(np.asarray(labels, dtype=np.float32)[rows].sum(1) - coef, 0, 1).astype(np.float32)


@dataclass
class SimulatedBatch:
    """One training batch: the members' |e| (N x H x W x C), packed groups over them, and each
    group's target (B x H x W x C, the un-augmented image)."""

    abs_enc: np.ndarray
    groups: PackedGroups
    targets: np.ndarray


class GroupSampler:
    """Simulated groups from fresh rounds of the attacker's encryptions (module docstring):
    `draw(B)` gives B groups; a new round every cfg.round_steps draws."""

    def __init__(self, data: AttackerEncryptions, cfg: SimulatedGroupsConfig, T: int, seed: int):
        self.data, self.cfg = data, cfg
        self.lo, self.hi = cfg.sizes(T)
        self.rng = np.random.default_rng(seed)
        self.draws = 0
        self.round = None

    def _new_round(self) -> None:
        data, rng = self.data, self.rng
        idx = rng.choice(len(data.aux), size=data.n_images, replace=False)
        view, key = data.encrypt_subset(idx)
        ids = key.private_of()
        img_class = np.asarray(data.aux.labels)[idx]
        coef, _ = lambdas_from_labels(view.labels, ids, img_class)        # as the attacker reads them
        shift = (key.augmentation[:, :, :2].astype(np.float32) if key.augmentation is not None
                 else np.zeros(ids.shape + (2,), np.float32))
        holders = [[] for _ in idx]
        for j in range(ids.shape[1]):
            for r, i in enumerate(ids[:, j]):
                holders[i].append((r, coef[r, j], *shift[r, j]))
        support = label_support(view.labels)
        in_class = ((np.asarray(img_class)[ids][:, :, None] == np.arange(view.labels.shape[1])).sum(1))  # N x classes
        self.round = {"abs": np.abs(view.encryptions), "labels": view.labels, "ids": ids, "targets": key.private,
                      "classes": img_class, "holders": [np.asarray(h) for h in holders], "support": support,
                      "in_class": in_class}

    def _wrong_members(self, i: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """n encryptions that do not hold image i, from those whose label names its class (any
        other when there are none), each with the coefficient its label gives that class."""
        r = self.round
        c = r["classes"][i]
        others = ~(r["ids"] == i).any(1)
        pool = np.flatnonzero(others & r["support"][:, c])
        if not len(pool):
            pool = np.flatnonzero(others)
        rows = pool[self.rng.integers(0, len(pool), size=n)]
        coef = r["labels"][rows, c] / np.maximum(r["in_class"][rows, c], 1)
        fallback = coef <= 0                              # a row whose label lacks the class
        coef[fallback] = r["labels"][rows[fallback]].max(1)
        return rows, coef.astype(np.float32)

    def draw(self, B: int) -> SimulatedBatch:
        if self.round is None or self.draws % self.cfg.round_steps == 0:
            self._new_round()
        self.draws += 1
        r, rng = self.round, self.rng
        images = rng.choice(len(r["targets"]), size=B, replace=B > len(r["targets"]))
        rows, coefs, shifts, group = [], [], [], []
        for b, i in enumerate(images):
            held = r["holders"][i]
            n = int(rng.integers(self.lo, self.hi + 1))
            n_wrong = int(round(rng.uniform(0, self.cfg.wrong_max) * n))
            n_right = max(1, min(n - n_wrong, len(held)))
            pick = held[rng.choice(len(held), size=n_right, replace=False)]
            w_rows, w_coef = self._wrong_members(i, n_wrong)
            rows += [pick[:, 0].astype(np.int64), w_rows]
            coefs += [pick[:, 1].astype(np.float32), w_coef]
            shifts += [pick[:, 2:4].astype(np.int64), np.full((n_wrong, 2), UNKNOWN_SHIFT, dtype=np.int64)]
            group.append(np.full(n_right + n_wrong, b, dtype=np.int64))
        rows, coef = np.concatenate(rows), np.concatenate(coefs)
        packed = PackedGroups(np.arange(len(rows)), coef, other_weight(r["labels"], rows, coef), np.concatenate(group),
                              np.asarray(r["classes"])[images], np.concatenate(shifts))
        return SimulatedBatch(r["abs"][rows], packed, r["targets"][images])
