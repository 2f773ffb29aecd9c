"""Training samplers by name: instance-, class-balanced, square-root, progressive and
class-aware sampling.

Kang et al., "Decoupling Representation and Classifier for Long-Tailed Recognition" (ICLR
2020), sec. 3: class j (n_j training images) is drawn with probability

    p_j = n_j^q / sum_i n_i^q      q = 1 instance-balanced, q = 0 class-balanced,
                                   q = 1/2 square-root,
    progressive: p_j(t) = (1 - t / T) p_j^IB + (t / T) p_j^CB   (t the epoch, T = num_epochs),

then an image of that class uniformly. ``instance`` is :class:`datasets.common.EpochSampler`
(a permutation of the training set per epoch, the published recipe); the others draw an epoch
of as many samples as the training set has, with replacement.

``class_aware`` is MiSLAS's ``ClassAwareSampler`` (github.com/dvlab-research/MiSLAS,
datasets/sampler.py), the sampler of its stage 2: classes are visited in a random order that
is reshuffled after every pass over all classes; each visit takes ``num_samples_cls`` = 4
consecutive images of the class from the class's own cycle (a permutation of its images,
reshuffled when it wraps, so no image repeats within a cycle); an epoch has
max_count * num_classes samples.

Every sampler here keeps the item protocol of :class:`EpochSampler`: ``set_epoch(e)``,
``start`` (items of this rank's share to skip, to resume inside an epoch), ``indices()``,
``len()``, and iterating yields ``(index, per-sample seed)`` for the seeded augmentation of
:class:`datasets.common.SeededImageDataset`. The whole epoch is drawn from (seed, epoch) with
our own generator (never global random state), so an epoch is the same whoever draws it and
after any resume. Under DDP each rank takes every ``world_size``-th item of the epoch's global
order, padded by repetition to equal shares, as :class:`EpochSampler` does. With replacement
an index can occur several times in an epoch, so the per-sample seed is taken from the item's
position in the (padded) global order, not from the index: two copies of an image get two
different augmentations.
"""
from __future__ import annotations

import math
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
from torch.utils.data import Sampler

from datasets.common import EpochSampler, sample_seed
from utils.errors import DataError

__all__ = ["SAMPLERS", "TrainSampler", "ClassSampler", "PowerSampler", "ProgressiveSampler",
           "ClassAwareSampler", "build_sampler", "class_probabilities"]

# the accepted values of the config key ``sampler`` (config/__init__.py lists the same)
SAMPLERS = ("instance", "class_balanced", "sqrt", "progressive", "class_aware")


def class_probabilities(counts: Sequence[int], q: float) -> np.ndarray:
    """p_j proportional to n_j^q over the classes with n_j > 0 (0 for empty classes)."""
    n = np.asarray(counts, dtype=np.float64)
    w = np.where(n > 0, np.power(np.maximum(n, 1.0), q), 0.0)
    return w / w.sum()


class ClassSampler(Sampler):
    """Base of the class-level samplers: an epoch's global order drawn from (seed, epoch),
    this rank's share of it, and per-position sample seeds.

    Subclasses define :meth:`epoch_length` (samples in the global order) and :meth:`draw`
    (the global order of ``self.epoch`` from a numpy generator).
    """

    def __init__(self, targets: Sequence[int], seed: int = 0, rank: int = 0,
                 world_size: int = 1):
        targets = np.asarray(targets, dtype=np.int64)
        if targets.ndim != 1 or targets.size == 0:
            raise DataError("a class sampler needs a non-empty 1-D list of training labels")
        if targets.min() < 0:
            raise DataError(f"training labels must be >= 0, found {int(targets.min())}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside [0, {world_size})")
        self.n = int(targets.size)
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch = 0
        self.start = 0  # items of this rank's share to skip (resuming inside an epoch)
        self.counts = np.bincount(targets)
        # images of each class, class by class (stable: ascending index inside a class)
        self.by_class = np.argsort(targets, kind="stable")
        self.class_start = np.concatenate(([0], np.cumsum(self.counts)[:-1]))
        self._cache: Tuple[Optional[int], Optional[np.ndarray]] = (None, None)

    # -------------------------------------------------------------- to define
    def epoch_length(self) -> int:
        """Samples in one epoch's global order (all ranks together, before padding)."""
        raise NotImplementedError

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        """The global order of ``self.epoch``: :meth:`epoch_length` dataset indices."""
        raise NotImplementedError

    # -------------------------------------------------------------- protocol
    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def global_order(self) -> np.ndarray:
        """The epoch's order over all ranks (int64, unpadded), drawn once per epoch."""
        epoch, order = self._cache
        if epoch != self.epoch or order is None:
            # index -1 of sample_seed: the stream of the epoch's order, as EpochSampler's
            rng = np.random.default_rng(sample_seed(self.seed, self.epoch, -1))
            order = np.asarray(self.draw(rng), dtype=np.int64)
            self._cache = (self.epoch, order)
        return order

    def _share_length(self) -> int:
        return math.ceil(self.epoch_length() / self.world_size)

    def positions(self) -> np.ndarray:
        """Positions in the padded global order of this rank's remaining items."""
        first = self.rank + self.world_size * self.start
        stop = self._share_length() * self.world_size
        return np.arange(first, stop, self.world_size, dtype=np.int64)

    def indices(self) -> List[int]:
        """This rank's share of the epoch, past ``start`` (dataset indices)."""
        order = self.global_order()
        return order[self.positions() % order.size].tolist()

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        order = self.global_order()
        for pos in self.positions().tolist():
            yield int(order[pos % order.size]), sample_seed(self.seed, self.epoch, pos)

    def __len__(self) -> int:
        return max(self._share_length() - self.start, 0)

    # -------------------------------------------------------------- helpers
    def pick_in_class(self, rng: np.random.Generator, classes: np.ndarray) -> np.ndarray:
        """One image drawn uniformly from each given class."""
        offset = rng.integers(0, self.counts[classes])
        return self.by_class[self.class_start[classes] + offset]


class PowerSampler(ClassSampler):
    """Class j with probability proportional to n_j^q (Kang et al. 2020), then an image of it
    uniformly; ``len(targets)`` samples per epoch, with replacement. q = 1 instance-balanced
    (with replacement), q = 0 class-balanced, q = 1/2 square-root."""

    def __init__(self, targets: Sequence[int], q: float, seed: int = 0, rank: int = 0,
                 world_size: int = 1):
        super().__init__(targets, seed, rank, world_size)
        self.q = float(q)

    def probabilities(self) -> np.ndarray:
        """p_j of the current epoch."""
        return class_probabilities(self.counts, self.q)

    def epoch_length(self) -> int:
        return self.n

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        p = self.probabilities()
        classes = rng.choice(p.size, size=self.n, p=p)
        return self.pick_in_class(rng, classes)


class ProgressiveSampler(PowerSampler):
    """Progressively-balanced sampling (Kang et al. 2020): p_j(t) = (1 - t / T) p_j^IB +
    (t / T) p_j^CB with t the (0-based) epoch and T = ``num_epochs``: instance-balanced at
    the first epoch, moving linearly towards class-balanced."""

    def __init__(self, targets: Sequence[int], num_epochs: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1):
        if num_epochs < 1:
            raise ValueError(f"num_epochs must be >= 1, got {num_epochs}")
        super().__init__(targets, 1.0, seed, rank, world_size)
        self.num_epochs = int(num_epochs)

    def probabilities(self) -> np.ndarray:
        t = min(self.epoch / self.num_epochs, 1.0)
        return ((1.0 - t) * class_probabilities(self.counts, 1.0)
                + t * class_probabilities(self.counts, 0.0))


class ClassAwareSampler(ClassSampler):
    """MiSLAS's class-aware sampler (datasets/sampler.py there), drawn from (seed, epoch).

    The class sequence is a chain of random permutations of the classes (MiSLAS's
    ``RandomCycleIter`` over classes: reshuffled at every wrap); each class visit yields
    ``num_samples_cls`` consecutive items of that class's own chain of random permutations of
    its images (its ``RandomCycleIter``). An epoch has ``num_samples`` samples (default
    max_count * num_classes, as MiSLAS); a shorter ``num_samples`` is the first part of
    that epoch (to match a training loop that stops each epoch early).

    One difference: MiSLAS's cycle iterators live as long as the sampler, so a cycle
    interrupted by the end of an epoch goes on in the next. Here every epoch starts fresh
    cycles drawn from (seed, epoch), so that an epoch does not depend on how much of the
    previous ones a training loop consumed (MiSLAS's stage 2 stops each epoch early, and its
    loader workers read ahead by a varying amount); within an epoch the statistics are
    MiSLAS's. Classes without images are never visited (MiSLAS counts ``np.unique`` labels).
    """

    def __init__(self, targets: Sequence[int], num_samples_cls: int = 4,
                 num_samples: Optional[int] = None, seed: int = 0, rank: int = 0,
                 world_size: int = 1):
        super().__init__(targets, seed, rank, world_size)
        if num_samples_cls < 1:
            raise ValueError(f"num_samples_cls must be >= 1, got {num_samples_cls}")
        self.num_samples_cls = int(num_samples_cls)
        self.classes = np.flatnonzero(self.counts)
        self.full_length = int(self.counts.max()) * self.classes.size
        if num_samples is not None and num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        self.num_samples = self.full_length if num_samples is None else int(num_samples)

    def epoch_length(self) -> int:
        return self.num_samples

    def class_sequence(self, rng: np.random.Generator, visits: int) -> np.ndarray:
        """The first ``visits`` classes of a chain of random permutations of the classes."""
        c = self.classes.size
        cycles = math.ceil(visits / c)
        perms = rng.permuted(np.tile(self.classes, (cycles, 1)), axis=1)
        return perms.reshape(-1)[:visits]

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        k = self.num_samples_cls
        # a shorter epoch is drawn whole and cut, so that it is the start of the full one
        visits = math.ceil(max(self.num_samples, self.full_length) / k)
        seq = self.class_sequence(rng, visits)
        # item r of class c's chain is item (r mod n_c) of its permutation number r // n_c;
        # visit v of class c (its m-th visit) reads items m k .. m k + k - 1 of the chain
        order = np.empty((visits, k), dtype=np.int64)
        visit_of = np.argsort(seq, kind="stable")  # visits grouped by class, in time order
        visits_per_class = np.bincount(seq, minlength=self.counts.size)
        first = 0
        for c in self.classes.tolist():
            m = int(visits_per_class[c])
            rows = visit_of[first:first + m]
            first += m
            n_c = int(self.counts[c])
            need = m * k
            perms = rng.permuted(np.tile(np.arange(n_c), (math.ceil(need / n_c), 1)), axis=1)
            chain = perms.reshape(-1)[:need]
            order[rows] = self.by_class[self.class_start[c] + chain].reshape(m, k)
        return order.reshape(-1)[:self.num_samples]


# what a training loader accepts as its sampler
TrainSampler = Union[EpochSampler, ClassSampler]


def build_sampler(kind: str, targets: Sequence[int], *, seed: int = 0, rank: int = 0,
                  world_size: int = 1, num_epochs: int = 1,
                  num_samples: Optional[int] = None) -> TrainSampler:
    """The training sampler ``kind`` (one of :data:`SAMPLERS`) over ``targets``.

    ``instance`` is today's :class:`EpochSampler` (shuffled, padded to equal DDP shares;
    only ``len(targets)`` is used); ``num_epochs`` is T of ``progressive``; ``num_samples``
    is the epoch length of ``class_aware`` (default max_count * num_classes, as MiSLAS).
    """
    if kind == "instance":
        return EpochSampler(len(targets), seed=seed, shuffle=True, rank=rank,
                            world_size=world_size, pad=True)
    common = dict(seed=seed, rank=rank, world_size=world_size)
    if kind == "class_balanced":
        return PowerSampler(targets, 0.0, **common)
    if kind == "sqrt":
        return PowerSampler(targets, 0.5, **common)
    if kind == "progressive":
        return ProgressiveSampler(targets, num_epochs, **common)
    if kind == "class_aware":
        return ClassAwareSampler(targets, num_samples=num_samples, **common)
    raise ValueError(f"sampler {kind!r}; accepted: {', '.join(SAMPLERS)}")
