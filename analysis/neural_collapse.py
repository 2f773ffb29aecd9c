"""Neural-collapse (NC) metrics of last-layer features and classifier weights.

Definitions (Papyan, Han & Donoho 2020, adapted to long-tailed data), for training-set
features ``H`` (N x d) with labels, and classifier rows ``W`` (C x d, the ``fc`` weight, bias
left out):

* class means mu_c; the global mean mu_G is the *unweighted* mean of the class means, so
  that a simplex-ETF geometry is recognised whatever the class frequencies (the
  sample-weighted mean would be pulled towards the head classes); M = rows mu_c - mu_G.
* NC1 = trace(Sigma_W Sigma_B^+) / C: Sigma_W = average over samples of
  (h - mu_y)(h - mu_y)^T, Sigma_B = average over classes of (mu_c - mu_G)(mu_c - mu_G)^T,
  ^+ the Moore-Penrose pseudo-inverse. 0 when every feature sits on its class mean.
* equinorm = std / mean (population std) of the row norms of M (``equinorm_means``) and of
  W (``equinorm_w``). 0 when all classes have equally long means / weight vectors.
* equiangularity = mean over ordered pairs i != j of |cos(x_i, x_j) + 1 / (C - 1)|, for the
  rows of M (``equiangular_means``) and of W (``equiangular_w``). 0 for a simplex ETF.
* NC3 (self-duality) = || W / ||W||_F - M / ||M||_F ||_F^2. 0 when W is M up to scale.

Each metric is also computed on the classes of each many / medium / few index range:
Sigma_W over those classes' samples, Sigma_B / M / W over those classes' rows and C the
group's class count in NC1. Centring (mu_G) and the ETF cosine -1/(C-1) stay those of the
whole class set: a subset of a simplex ETF then still scores 0, and minority collapse (tail
weight vectors drifting together) shows up as a large tail equiangularity instead of being
hidden by re-centring. Values that need two classes (equinorm, equiangularity) are NaN for
a group with fewer; every value is NaN for an empty group. Classes without a training sample
are left out everywhere.

Everything is computed in float64 with matrix operations (no loops over classes or class
pairs): the within-class scatter is accumulated over chunks of samples, and the
pseudo-inverse goes through the k x k Gram matrix of the class means when a group has fewer
classes than feature dimensions (else through the d x d Sigma_B).
"""
from __future__ import annotations

import math
from typing import Dict, Mapping, Optional, Tuple

import torch

NC_KEYS = ("nc1", "equinorm_means", "equinorm_w", "equiangular_means", "equiangular_w", "nc3")


def _suffix(group: str) -> str:
    return "" if group == "all" else f"_{group}"


def nc_keys(groups=("many", "medium", "few")) -> Tuple[str, ...]:
    """The flat key names :func:`nc_metrics` returns for the given group names."""
    return tuple(f"{k}{_suffix(g)}" for g in ("all", *groups) for k in NC_KEYS)


def class_means(features: torch.Tensor, labels: torch.Tensor, num_classes: int,
                device: Optional[torch.device] = None, chunk_size: int = 16384
                ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-class mean features (C x d, float64; zero rows for absent classes) and counts.

    Works over chunks of samples so that no float64 copy of all features is made.
    """
    dev = device or features.device
    n, d = features.shape
    sums = torch.zeros(num_classes, d, dtype=torch.float64, device=dev)
    for s in range(0, n, chunk_size):
        sums.index_add_(0, labels[s:s + chunk_size].to(dev),
                        features[s:s + chunk_size].to(dev, torch.float64))
    counts = torch.bincount(labels.to(dev), minlength=num_classes)
    return sums / counts.clamp(min=1).unsqueeze(1).to(torch.float64), counts


def _row_norm_spread(x: torch.Tensor) -> float:
    """std / mean of the row norms (population std); NaN with fewer than two rows."""
    if x.shape[0] < 2:
        return math.nan
    norms = x.norm(dim=1)
    mean = norms.mean()
    return float(norms.std(correction=0) / mean) if float(mean) > 0 else math.nan


def _equiangularity(x: torch.Tensor, num_classes: int, block: int = 2048) -> float:
    """Mean over ordered pairs i != j of |cos(x_i, x_j) + 1/(num_classes - 1)|.

    The cosine matrix is built ``block`` rows at a time (bounded memory at C = 8142); the
    diagonal is subtracted rather than masked.
    """
    k = x.shape[0]
    if k < 2 or num_classes < 2:
        return math.nan
    xn = x / x.norm(dim=1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
    shift = 1.0 / (num_classes - 1)
    total = x.new_zeros(())
    for s in range(0, k, block):
        dev = (xn[s:s + block] @ xn.T + shift).abs()
        idx = torch.arange(dev.shape[0], device=x.device)
        total = total + dev.sum() - dev[idx, idx + s].sum()
    return float(total / (k * (k - 1)))


# Relative cut-off of Sigma_B's eigenvalues in the pseudo-inverse. The features are float32
# (relative precision ~1e-7) and Sigma_B is quadratic in them, so eigenvalues below ~1e-10 of
# the largest carry no information -- e.g. the exact zero of the whole set's Sigma_B, whose
# centred means sum to zero -- and inverting them would only amplify rounding noise.
SB_RTOL = 1e-10


def _trace_sw_sb_pinv(sw: torch.Tensor, m: torch.Tensor) -> float:
    """trace(Sigma_W Sigma_B^+) with Sigma_B = m^T m / k for the k x d centred means ``m``.

    For k <= d: with G = m m^T = U diag(lam) U^T, (m^T m)^+ = m^T U diag(lam^-2) U^T m, so
    the trace is k * sum_i u_i^T (m Sigma_W m^T) u_i / lam_i^2 over the kept lam_i -- a
    k x k eigen-problem instead of a d x d pseudo-inverse. Otherwise the d x d pinv.
    """
    k, d = m.shape
    if k <= d:
        lam, u = torch.linalg.eigh(m @ m.T)
        keep = lam > SB_RTOL * lam.max().clamp_min(0)
        if not bool(keep.any()):
            return math.nan
        u, lam = u[:, keep], lam[keep]
        proj = u.T @ (m @ sw @ m.T) @ u
        return float(k * (proj.diagonal() / lam ** 2).sum())
    sb = m.T @ m / k
    return float((sw * torch.linalg.pinv(sb, hermitian=True, rtol=SB_RTOL)).sum())


def nc_analysis(features: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor,
                ranges: Optional[Mapping[str, Tuple[int, int]]] = None,
                device: Optional[torch.device] = None, chunk_size: int = 16384
                ) -> Tuple[Dict[str, float], torch.Tensor]:
    """NC metrics (see the module doc) and the per-class norms ||mu_c - mu_G||.

    ``features`` N x d, ``labels`` N (ints in [0, C)), ``weight`` C x d; ``ranges`` maps a
    group name to a [start, end) class-index range. Returns the flat dict of
    :func:`nc_metrics` and a length-C float64 tensor of centred class-mean norms (NaN for
    classes without a sample), on the CPU. ``device`` is where the float64 matrix work runs
    (default: the features' device); features stay where they are and move chunk by chunk.
    """
    n, d = features.shape
    c, dw = weight.shape
    if dw != d or labels.shape[0] != n:
        raise ValueError(f"shape mismatch: features {tuple(features.shape)}, labels "
                         f"{tuple(labels.shape)}, weight {tuple(weight.shape)}")
    dev = device or features.device
    labels = labels.long()
    if n and (int(labels.min()) < 0 or int(labels.max()) >= c):
        raise ValueError(f"labels must lie in [0, {c})")
    w = weight.detach().to(dev, torch.float64)
    means, counts = class_means(features, labels, c, dev, chunk_size)
    present = counts > 0
    n_present = int(present.sum())
    mu_g = means[present].mean(dim=0) if n_present else means.new_zeros(d)
    m_all = means - mu_g

    groups: Dict[str, torch.Tensor] = {"all": present.clone()}
    for name, (a, b) in (ranges or {}).items():
        mask = torch.zeros(c, dtype=torch.bool, device=dev)
        mask[a:b] = True
        groups[name] = mask & present

    # Within-class scatter per group, one pass over the samples. When the named groups
    # split the present classes exactly, the whole set's scatter is their sum (no second
    # accumulation, which would double the N x d^2 cost).
    named = [g for g in groups if g != "all"]
    stacked = torch.stack([groups[g] for g in named]) if named else None
    partition = stacked is not None and bool((stacked.sum(0) == present.long()).all())
    direct = [g for g in groups if not (g == "all" and partition)]
    scatter = {g: torch.zeros(d, d, dtype=torch.float64, device=dev) for g in direct}
    for s in range(0, n, chunk_size):
        y = labels[s:s + chunk_size].to(dev)
        dev_h = features[s:s + chunk_size].to(dev, torch.float64) - means[y]
        for g in direct:  # a handful of groups, not classes
            sel = dev_h[groups[g][y]]
            scatter[g] += sel.T @ sel
    if partition:
        scatter["all"] = sum(scatter[g] for g in named)

    out: Dict[str, float] = {}
    for g, mask in groups.items():
        sfx = _suffix(g)
        k = int(mask.sum())
        n_g = int(counts[mask].sum())
        if k == 0:
            out.update({f"{key}{sfx}": math.nan for key in NC_KEYS})
            continue
        m, wg = m_all[mask], w[mask]
        out[f"nc1{sfx}"] = _trace_sw_sb_pinv(scatter[g] / max(n_g, 1), m) / k
        out[f"equinorm_means{sfx}"] = _row_norm_spread(m)
        out[f"equinorm_w{sfx}"] = _row_norm_spread(wg)
        out[f"equiangular_means{sfx}"] = _equiangularity(m, n_present)
        out[f"equiangular_w{sfx}"] = _equiangularity(wg, n_present)
        wn, mn = wg.norm(), m.norm()
        out[f"nc3{sfx}"] = (float(((wg / wn - m / mn) ** 2).sum())
            if float(wn) > 0 and float(mn) > 0 else math.nan)
    mean_norms = torch.where(present, m_all.norm(dim=1),
                             torch.full((c,), math.nan, dtype=torch.float64, device=dev))
    return out, mean_norms.cpu()


def nc_metrics(features: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor,
               ranges: Optional[Mapping[str, Tuple[int, int]]] = None,
               device: Optional[torch.device] = None, chunk_size: int = 16384
               ) -> Dict[str, float]:
    """Flat dict of NC metrics: ``nc1, equinorm_means, equinorm_w, equiangular_means,
    equiangular_w, nc3`` for all classes, and the same with ``_<group>`` appended for each
    group of ``ranges`` (e.g. ``nc1_few``). Floats, NaN where undefined."""
    return nc_analysis(features, labels, weight, ranges, device, chunk_size)[0]
