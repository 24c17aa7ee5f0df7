"""The data owner's training and test batches, the InstaHide authors' way (`train_inside.py`,
`train_cross.py` of Huang et al. 2020): every epoch, each training batch is augmented afresh and
encrypted afresh, its images mixed with one another (and, cross-dataset, with public patches)
with this package's own `encrypt`, labels mixed by the private coefficients. Encrypted testing
averages the predictions of K encryptions of each test image (the authors' advice)."""
from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from hidebench.defenses.augment import PAD, crop_flip
from hidebench.defenses.instahide import encrypt
from hidebench.scheme import EncryptionConfig
from hidebench.types import HidebenchError, SecretKey


@dataclass
class Batch:
    """images: B x H x W x C, what the classifier sees; targets: B x n_classes (mixed labels, or
    one-hot for vanilla training); key: the batch's encryption key (None for vanilla), whose
    `private` holds the augmented images that were mixed."""

    images: np.ndarray
    targets: np.ndarray
    key: SecretKey | None


def check_batching(scheme: EncryptionConfig | None, batch_size: int, n_train: int) -> None:
    """Mixing happens inside a batch: it must hold every private image of one encryption."""
    if n_train < batch_size:
        raise HidebenchError(f"the training set has {n_train} images, fewer than one batch of {batch_size}")
    if scheme is not None and scheme.n_private_slots > batch_size:
        raise HidebenchError(f"k={scheme.k} {scheme.mode}-dataset mixes {scheme.n_private_slots} distinct private images, "
                             f"more than a batch of {batch_size} holds; raise utility.batch_size, use a larger "
                             "training set or lower k")


def one_epoch(images: np.ndarray, labels: np.ndarray, n_classes: int, scheme: EncryptionConfig | None,
              patches: np.ndarray | None, batch_size: int, rng: np.random.Generator, augment: bool,
              pad: int = PAD, flips: np.ndarray | None = None) -> Iterator[Batch]:
    """The batches of one epoch: a fresh shuffle, augmentation (shifts up to `pad` pixels; flips
    random, or given per training image by `flips`) and encryption (T=1 per batch); the last
    incomplete batch is dropped. scheme None: vanilla training, one-hot targets."""
    order = rng.permutation(len(images))
    cfg = None if scheme is None else scheme.replace(T=1)
    for a in range(0, len(order) - batch_size + 1, batch_size):
        idx = order[a: a + batch_size]
        x, y = images[idx], labels[idx]
        if augment:
            x, _ = crop_flip(x, rng, pad, None if flips is None else flips[idx])
        if cfg is None:
            yield Batch(x, np.eye(n_classes, dtype=np.float32)[y], None)
            continue
        view, key = encrypt(x, y, n_classes, cfg, seed=int(rng.integers(2 ** 63)), public_patches=patches)
        yield Batch(view.encryptions, view.labels, key)


def prefetched(batches: Iterator, depth: int = 2) -> Iterator:
    """The items of `batches`, made ahead by a worker thread (numpy's augmentation and
    encryption overlap the model's step; the order, hence every result, is unchanged)."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work():
        try:
            for b in batches:
                if not put(b):
                    return
            put(done)
        except BaseException as e:          # handed to the consumer, raised there
            put(e)

    t = threading.Thread(target=work, daemon=True)
    t.start()
    try:
        while (item := q.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        t.join()


def encrypted_test_sets(images: np.ndarray, labels: np.ndarray, n_classes: int, scheme: EncryptionConfig,
                        patches: np.ndarray | None, K: int, chunk: int, rng: np.random.Generator):
    """Per chunk of about `chunk` test images (mixed among themselves): (indices of the chunk's
    images, K encryptions of each, which chunk image each encryption is made for). The chunks
    are random subsets: a test set stored by class (an ImageFolder tree) would otherwise mix
    every image with images of its own class, whose mixed label is then its own."""
    cfg = scheme.replace(T=K)
    n_chunks = max(1, min(len(images) // max(scheme.n_private_slots, 1), -(-len(images) // chunk)))
    for idx in np.array_split(rng.permutation(len(images)), n_chunks):
        view, key = encrypt(images[idx], labels[idx], n_classes, cfg, seed=int(rng.integers(2 ** 63)),
                            public_patches=patches)
        yield idx, view.encryptions, key.selection[:, 0]
