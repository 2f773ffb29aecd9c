"""The ARB-Loss paper's attraction / repulsion diagnostic of the classifier gradient, vectorised.

For logits z = W h + b, the loss gradient of classifier row W_i is

    dL/dW_i = sum_n G_ni h_n,        G = dL/dz  (B x C, per-sample logit-gradient coefficients)

(for cross-entropy G = (p - onehot(y)) / B, for ARB-Loss q - onehot(y) with q = softmax(z + log n),
over B for mean reduction). The part from samples of class i *attracts* W_i (its coefficient
is negative: a descent step moves W_i towards those features), the parts from samples of other
classes *repel* it. Per class i:

    attraction_i = || sum_{n: y_n = i} G_ni h_n ||
    repulsion_i  = || sum_{n: y_n != i} G_ni h_n ||

The published code takes the norm of every (i, j) component in a C x C Python loop per batch;
here both come from two matmuls (O(B C d)), and :func:`pair_norms` gives the full C x C table
of component norms without a loop when it is wanted.

Mixup: the loss is lam * L(z, y_a) + (1 - lam) * L(z, y_b), so each mixed sample contributes
two terms with their own targets. Each term is attributed to its own target class: the sample
counts as a pseudo-sample of class y_a with coefficient row dL_a/dz and as one of class y_b with
dL_b/dz (same feature h_n). This keeps the exact total gradient and credits the lam share of
the mixed image to y_a and the 1 - lam share to y_b, rather than calling the whole mixed sample
"class y_a" (which would count the y_b term's pull on W_{y_b} as repulsion).
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from methods.losses import as_float

__all__ = ["coefficients", "term_coefficients", "attraction_repulsion", "pair_norms",
           "GradBalanceMonitor"]

GROUPS = ("many", "medium", "few")


def term_coefficients(logits: torch.Tensor, criterion, y_a: torch.Tensor,
                      y_b: Optional[torch.Tensor] = None, lam: float = 1.0,
                      class_cnt: Optional[torch.Tensor] = None
                      ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Per-sample logit gradients of the two mixup terms: (d[lam L(z, y_a)]/dz,
    d[(1 - lam) L(z, y_b)]/dz), each B x C (float32; float64 for float64 logits); the second
    is None without mixing (``y_b`` None or ``lam`` = 1).

    Autograd on a detached copy of the logits, so the result is exact for any loss with the
    ``(logits, target, class_cnt)`` signature (CE, ARB with batch or global counts, weighted,
    focal, LAS) including its reduction; ``class_cnt`` as the trainer passes it (None: the
    loss's own choice for ``y_a``, :meth:`methods.ClassCountLoss.counts_for`).
    """
    z = as_float(logits.detach())
    cnt = class_cnt if class_cnt is not None else criterion.counts_for(y_a, z.shape[1])
    mixed = y_b is not None and lam != 1.0
    with torch.enable_grad():
        # One leaf per term: a single backward pass returns the two terms separately.
        z_a = z.clone().requires_grad_(True)
        if mixed:
            z_b = z.clone().requires_grad_(True)
            total = lam * criterion(z_a, y_a, cnt) + (1.0 - lam) * criterion(z_b, y_b, cnt)
            grads = torch.autograd.grad(total, (z_a, z_b))
        else:
            grads = torch.autograd.grad(criterion(z_a, y_a, cnt), (z_a,))
    return grads[0], (grads[1] if mixed else None)


def coefficients(logits: torch.Tensor, criterion, y_a: torch.Tensor,
                 y_b: Optional[torch.Tensor] = None, lam: float = 1.0,
                 class_cnt: Optional[torch.Tensor] = None) -> torch.Tensor:
    """G = dL/dz (B x C) of the (mixup) training loss; see :func:`term_coefficients`."""
    g_a, g_b = term_coefficients(logits, criterion, y_a, y_b, lam, class_cnt)
    return g_a if g_b is None else g_a + g_b


def attraction_repulsion(h: torch.Tensor, G: torch.Tensor, y: torch.Tensor
                         ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-class attraction and repulsion norms (two length-C tensors) of the classifier
    gradient sum_n G_ni h_n.

    h: B x d fc inputs, G: B x C logit-gradient coefficients, y: B class of each (pseudo-)
    sample. attraction_i = ||sum_{y_n = i} G_ni h_n||, repulsion_i = ||sum_{y_n != i} G_ni h_n||.
    """
    G = as_float(G)
    h = h.to(G.dtype)
    total = G.t() @ h  # C x d: the full gradient of every row
    own = F.one_hot(y, G.shape[1]).to(G.dtype) * G  # keep only G[n, y_n]
    attract = own.t() @ h  # rows receive only their own class's samples
    return attract.norm(dim=1), (total - attract).norm(dim=1)


def pair_norms(h: torch.Tensor, G: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """C x C table P[i, j] = ||sum_{n: y_n = j} G_ni h_n||: the norm of the gradient component
    that samples of class j put on row i (the published code's double loop), without a loop.

    ||sum_{n in j} G_ni h_n||^2 = sum_{n, m in j} G_ni G_mi <h_n, h_m>, i.e. with the
    same-class Gram matrix S (B x B) and one-hot M: P^2 = (M^T (G * (S G)))^T.
    Costs O(B^2 (C + d) + B C^2) and C^2 memory: meant for C up to a few thousand.
    """
    out_dtype = as_float(G).dtype
    # The squares are sums of signed products that cancel for small components: float64.
    h = h.double()
    G = G.double()
    onehot = F.one_hot(y, G.shape[1]).to(G.dtype)
    same = (y[:, None] == y[None, :]).to(G.dtype) * (h @ h.t())
    sq = onehot.t() @ (G * (same @ G))  # [j, i]
    # Rounding can leave tiny negative squares for zero components.
    return sq.t().clamp_min(0.0).sqrt().to(out_dtype)


class GradBalanceMonitor:
    """Accumulates per-class attraction / repulsion norms over monitored training steps.

    Args:
        num_classes: C.
        freq: monitor every ``freq`` iterations (``due(global_step)``); 0 turns it off.
        ranges: {'many': (a, b), 'medium': (a, b), 'few': (a, b)} class-index ranges.

    Per monitored step :meth:`update` adds each class's attraction and repulsion norm
    (absent classes add a zero attraction: the mean over steps is the expected pull per
    monitored step, which is what differs between head and tail classes). Accumulators stay on
    the device (no host synchronisation per update). :meth:`log` writes TensorBoard scalars and
    histograms; :meth:`summary` returns floats for metrics.jsonl and resets.

    Group ratio = mean attraction / mean repulsion over the group's classes (a ratio of means:
    stable when a class's repulsion is tiny). Under DDP each rank sees its own batch share;
    log from rank 0.
    """

    def __init__(self, num_classes: int, freq: int,
                 ranges: Dict[str, Sequence[int]]):
        self.num_classes = num_classes
        self.freq = int(freq)
        self.ranges = {k: (int(v[0]), int(v[1])) for k, v in ranges.items()}
        self._attract: Optional[torch.Tensor] = None
        self._repulse: Optional[torch.Tensor] = None
        self.steps = 0

    def due(self, global_step: int) -> bool:
        """Whether iteration ``global_step`` is monitored."""
        return self.freq > 0 and global_step % self.freq == 0

    @torch.no_grad()
    def update(self, logits: torch.Tensor, h: torch.Tensor, criterion, y_a: torch.Tensor,
               y_b: Optional[torch.Tensor] = None, lam: float = 1.0,
               class_cnt: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Add one step: ``logits`` (B x C) and ``h`` (B x d, the fc input) of the training
        forward pass, and the loss arguments exactly as the trainer passed them to
        ``mixup_criterion``. Returns this step's (attraction, repulsion), length C each.

        W is not needed: the logits are linear in W, so dL/dW_i = sum_n G_ni h_n.
        """
        g_a, g_b = term_coefficients(logits, criterion, y_a, y_b, lam, class_cnt)
        h = h.detach()
        if g_b is None:
            attract, repulse = attraction_repulsion(h, g_a, y_a)
        else:  # each mixup term attributed to its own target (module docstring)
            attract, repulse = attraction_repulsion(torch.cat((h, h)), torch.cat((g_a, g_b)),
                                                    torch.cat((y_a, y_b)))
        if self._attract is None:
            self._attract = torch.zeros_like(attract)
            self._repulse = torch.zeros_like(repulse)
        self._attract += attract
        self._repulse += repulse
        self.steps += 1
        return attract, repulse

    __call__ = update

    def per_class(self) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean attraction, mean repulsion and their ratio per class over the steps so far
        (CPU float64; NaN ratio where both are zero, e.g. a class never in a monitored batch
        under ARB batch counts)."""
        if not self.steps:
            nan = torch.full((self.num_classes,), float("nan"), dtype=torch.float64)
            return nan, nan.clone(), nan.clone()
        a = self._attract.double().cpu() / self.steps
        r = self._repulse.double().cpu() / self.steps
        ratio = torch.where(r > 0, a / r.clamp_min(1e-300),
                            torch.where(a > 0, torch.full_like(a, math.inf),
                                        torch.full_like(a, math.nan)))
        return a, r, ratio

    def _groups(self) -> Dict[str, float]:
        a, r, _ = self.per_class()
        out: Dict[str, float] = {}
        for name in GROUPS:
            lo, hi = self.ranges.get(name, (0, 0))
            if hi <= lo or not self.steps:
                ga = gr = ratio = float("nan")
            else:
                ga, gr = float(a[lo:hi].mean()), float(r[lo:hi].mean())
                ratio = ga / gr if gr > 0 else float("nan")
            out[f"grad_attract_{name}"] = ga
            out[f"grad_repulse_{name}"] = gr
            out[f"grad_ratio_{name}"] = ratio
        return out

    def log(self, writer, step: int) -> None:
        """TensorBoard: group means of attraction / repulsion / ratio as scalars under
        ``grad/`` and per-class histograms (classes with a finite ratio). Does not reset."""
        if writer is None or not self.steps:
            return
        for key, value in self._groups().items():
            if math.isfinite(value):
                writer.add_scalar("grad/" + key[len("grad_"):], value, step)
        a, r, ratio = self.per_class()
        writer.add_histogram("grad/attraction", a, step)
        writer.add_histogram("grad/repulsion", r, step)
        finite = ratio[torch.isfinite(ratio)]
        if finite.numel():
            writer.add_histogram("grad/ratio", finite, step)

    def summary(self, reset: bool = True) -> Dict[str, float]:
        """{'grad_attract_many', 'grad_repulse_many', 'grad_ratio_many', ... medium, few}
        (NaN when nothing was monitored or a group is empty), then resets unless told not to."""
        out = self._groups()
        if reset:
            self.reset()
        return out

    def reset(self) -> None:
        """Forget the accumulated steps."""
        self._attract = self._repulse = None
        self.steps = 0
