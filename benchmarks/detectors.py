"""Benchmark: batched torch scoring of the KD, MAHA and LID detectors vs their scikit-learn references.

Synthetic pooled deep features (two class-conditional Gaussians in ``--dim`` dimensions, ``--n-fit`` fit and
``--n-query`` query samples; defaults 2,048-d, 1,000 + 1,000 like a ResNet-50 ``layer4`` on a small set):

- KD: ``KernelDensityDetector.score`` vs ``sklearn.neighbors.KernelDensity(kernel="gaussian").score_samples``
  per predicted class (the default ``kd_tree`` and the ``ball_tree``), median-heuristic bandwidth;
- MAHA: ``MahalanobisDetector`` (Ledoit-Wolf tied covariance; 2,048 channels > 1,000 samples) vs
  ``sklearn.covariance.LedoitWolf`` + ``.mahalanobis`` per class, min over classes -- fit and scoring;
- LID: ``minibatch_lid`` (10 clean minibatches of 100, k = 20) vs ``sklearn.neighbors.NearestNeighbors`` per
  minibatch + the MLE in numpy.

Each timing is the best of several runs (the first warms up): ours ``--repeats`` (MAHA fit: 2), scikit-learn 2
(``LedoitWolf.fit``: 1, it takes tens of seconds), with ``torch.set_num_threads(--threads)``. "max abs diff" compares our float64 result with the reference; KD also
reports the error of each implementation against an exact float64 brute force (scipy ``cdist`` + ``logsumexp``).
Prints a markdown table.

Run: ``python benchmarks/detectors.py``
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from scipy.spatial.distance import cdist
from scipy.special import logsumexp
from sklearn.covariance import LedoitWolf
from sklearn.neighbors import KernelDensity, NearestNeighbors

from monai_aegis.detectors import KernelDensityDetector, MahalanobisDetector, minibatch_lid


def best_time(fn: Callable[[], Any], runs: int) -> tuple[float, Any]:
    """Best wall time of ``runs`` calls (the first also warms up) and the result of the first."""
    out, best = None, float("inf")
    for i in range(max(1, runs)):
        t = time.perf_counter()
        res = fn()
        best = min(best, time.perf_counter() - t)
        out = res if i == 0 else out
    return best, out


def make_data(n: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(2, dim, generator=g, dtype=torch.float64) * 0.5
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.relu(means[y] + torch.randn(n, dim, generator=g, dtype=torch.float64))  # post-ReLU like features
    return x, y


def row(name: str, ref_name: str, t_ref: float, t32: float, t64: float, diff: str) -> str:
    return (
        f"| {name} | {ref_name} | {t_ref * 1e3:,.1f} | {t32 * 1e3:,.1f} | **{t_ref / t32:,.1f}x** | "
        f"{t64 * 1e3:,.1f} | {t_ref / t64:,.1f}x | {diff} |"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-fit", type=int, default=1000)
    p.add_argument("--n-query", type=int, default=1000)
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    x_fit, y_fit = make_data(args.n_fit, args.dim, 0)
    x_q, pred = make_data(args.n_query, args.dim, 1)
    f64, f32 = {"f": x_q}, {"f": x_q.float()}
    rows = []

    # ---------------- KD
    kd = KernelDensityDetector(bandwidth="median").fit({"f": x_fit}, y_fit)
    h = kd.bandwidths["f"]
    t64, s64 = best_time(lambda: kd.score(f64, pred), args.repeats)
    t32, s32 = best_time(lambda: kd.score(f32, pred), args.repeats)
    exact = np.empty(args.n_query)
    for c in (0, 1):
        ref, m = x_fit[y_fit == c].numpy(), (pred == c).numpy()
        d2 = cdist(x_q[m].numpy(), ref, "sqeuclidean")
        exact[m] = -(logsumexp(-d2 / (2 * h * h), 1) - np.log(len(ref)) - args.dim / 2 * np.log(2 * np.pi * h * h))
    for algorithm in ("kd_tree", "ball_tree"):
        kdes = {
            c: KernelDensity(kernel="gaussian", bandwidth=h, algorithm=algorithm).fit(x_fit[y_fit == c].numpy())
            for c in (0, 1)
        }

        def sk_kd() -> np.ndarray:
            out = np.empty(args.n_query)
            for c, kde in kdes.items():
                m = (pred == c).numpy()
                out[m] = -kde.score_samples(x_q[m].numpy())
            return out

        t_ref, s_ref = best_time(sk_kd, 2)
        diff = (
            f"{np.abs(s64.numpy() - s_ref).max():.1e} (vs exact: ours f64 {np.abs(s64.numpy() - exact).max():.1e}, "
            f"f32 {np.abs(s32.double().numpy() - exact).max():.1e}, sklearn {np.abs(s_ref - exact).max():.1e})"
        )
        rows.append(row("KD score", f"KernelDensity.score_samples ({algorithm})", t_ref, t32, t64, diff))

    # ---------------- MAHA
    def ours_fit(x: torch.Tensor) -> MahalanobisDetector:
        return MahalanobisDetector(covariance="ledoit_wolf").fit({"f": x}, y_fit)

    t64_fit, maha = best_time(lambda: ours_fit(x_fit), 2)
    t32_fit, _ = best_time(lambda: ours_fit(x_fit.float()), 2)
    means = torch.stack([x_fit[y_fit == c].mean(0) for c in (0, 1)]).numpy()
    xc = x_fit.numpy() - means[y_fit.numpy()]
    t_ref_fit, lw = best_time(lambda: LedoitWolf().fit(xc), 1)
    maha32 = ours_fit(x_fit.float())
    t64, s64 = best_time(lambda: maha.score(f64), args.repeats)
    t32, _ = best_time(lambda: maha32.score(f32), args.repeats)

    def sk_maha() -> np.ndarray:
        return np.stack([lw.mahalanobis(x_q.numpy() - means[c] + lw.location_) for c in (0, 1)], 1).min(1)

    t_ref, s_ref = best_time(sk_maha, 2)
    rel = np.abs(s64.numpy() - s_ref).max() / np.abs(s_ref).max()
    rows.append(row("MAHA fit", "LedoitWolf.fit", t_ref_fit, t32_fit, t64_fit, "(covariance + pinv)"))
    rows.append(
        row(
            "MAHA score",
            "LedoitWolf.mahalanobis",
            t_ref,
            t32,
            t64,
            f"{np.abs(s64.numpy() - s_ref).max():.1e} (rel {rel:.1e})",
        )
    )

    # ---------------- LID
    k, bs = 20, 100
    nb = args.n_fit // bs
    t64, l64 = best_time(lambda: minibatch_lid(x_q, x_fit, k, bs), args.repeats)
    x_fit32, x_q32 = x_fit.float(), x_q.float()
    t32, _ = best_time(lambda: minibatch_lid(x_q32, x_fit32, k, bs), args.repeats)
    nns = [NearestNeighbors(n_neighbors=k).fit(x_fit[b * bs : (b + 1) * bs].numpy()) for b in range(nb)]

    def sk_lid() -> np.ndarray:
        out = np.zeros(args.n_query)
        for nn in nns:
            d = nn.kneighbors(x_q.numpy())[0]
            out += -k / np.sum(np.log(d / d[:, -1:]), axis=1)
        return out / nb

    t_ref, l_ref = best_time(sk_lid, 2)
    rows.append(
        row("LID", "NearestNeighbors.kneighbors + MLE", t_ref, t32, t64, f"{np.abs(l64.numpy() - l_ref).max():.1e}")
    )

    print(
        f"\nDetector scoring, {args.n_query:,} queries x {args.dim:,}-d, fit set {args.n_fit:,} (2 classes), "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, times in ms "
        f"(best of {args.repeats} runs for ours, MAHA fit 2; scikit-learn best of 2, LedoitWolf.fit 1)\n"
    )
    print(
        "| step | scikit-learn reference | sklearn | ours f32 | speed-up f32 | ours f64 | speed-up f64 "
        "| max abs diff (ours f64 vs sklearn) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
