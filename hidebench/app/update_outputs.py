"""Files an update-attack run writes besides its record: the comparison grid and, under a
defense, the recovered encryptions as a challenge folder for chaining into release attacks."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from hidebench.challenge_io import save_challenge
from hidebench.types import PublicView, SecretKey

CHALLENGE_DIR = "challenge"


def save_grid(path: Path, private: np.ndarray, inputs: np.ndarray, recovered: np.ndarray, title: str = "") -> None:
    """PNG grid, one row per batch image; columns: private | input (encrypted) | recovered."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = [("private", private), ("input (encrypted)", inputs), ("recovered", recovered)]
    B = max(len(private), len(recovered))
    fig, axes = plt.subplots(B, 3, figsize=(6, 2 * B + 0.4), squeeze=False)
    for i in range(B):
        for j, (name, imgs) in enumerate(cols):
            ax = axes[i, j]
            if i < len(imgs):
                ax.imshow(np.clip((imgs[i] + 1) / 2, 0, 1))
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)


def save_chaining_challenge(out: Path, recovered: np.ndarray, labels: np.ndarray, key: SecretKey, *, k: int,
                            mode: str, scheme: str, class_names: list, origin: dict) -> Path:
    """The recovered encryptions (recovered[i] for the client's input i) with the attacker's
    labels as a challenge-format release (T=1) with the client's key rows, so that a release
    attack can decode them and the scorer can check it."""
    view = PublicView(np.clip(recovered, -1, 1).astype(np.float32), np.asarray(labels, np.float32), k, mode, scheme,
                      list(class_names), T=1)
    return save_challenge(out / CHALLENGE_DIR, view, key, origin, overwrite=True)
