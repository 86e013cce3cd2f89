"""Two screening jobs on one machine: each taking every core (torch's default) against each taking its share
(the one threads knob, ``AEGIS_NUM_THREADS`` / ``--threads`` / the bundles' ``num_threads``), against one job alone.

A job is ``AegisWrapper.screen`` (JPEG-80 Cushion -> classifier with forward hooks -> Shield) over ``--batches``
batches of random images, after one warm-up batch, in its own process. The default model is a torchvision ResNet-18
at 224 px (batch 16, 3 channels; random weights: speed, not accuracy); ``--model small_vgg`` takes the bundles'
64 px network. Reported: wall seconds per job (the slowest of the concurrent ones) and images per second of the
whole machine; "vs alone" is the machine's throughput relative to one job with every core.

    python benchmarks/threads.py [--batches 6] [--model resnet18|small_vgg] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def job(model: str, batches: int) -> None:
    """One screening job (run in a child process); prints its JSON timing."""
    sys.path.insert(0, str(ROOT))
    import logging

    import torch

    logging.disable(logging.WARNING)  # random images: calibration's per-class fallback warning is expected

    from monai_aegis.networks import build_aegis
    from monai_aegis.utils import set_num_threads

    threads = set_num_threads(None)  # AEGIS_NUM_THREADS, set by the parent
    torch.manual_seed(0)
    if model == "resnet18":
        import torchvision

        clf, shape, batch = torchvision.models.resnet18(num_classes=2), (3, 224, 224), 16
    else:
        from monai_aegis.networks.nets import small_vgg

        clf, shape, batch = small_vgg(1, 2), (1, 64, 64), 64
    wrapper = build_aegis(clf.eval(), shape, 2, cushion="jpeg80", shield_width=8, shield_hidden=16).eval()
    with torch.no_grad():
        wrapper.calibrate(torch.rand(batch, *shape), min_per_class=1)
        x = torch.rand(batch, *shape)
        wrapper.screen(x)  # warm-up
        t0 = time.perf_counter()
        for _ in range(batches):
            wrapper.screen(x)
        seconds = time.perf_counter() - t0
    print(json.dumps({"threads": threads, "seconds": seconds, "images": batches * batch}))


def run_jobs(n_jobs: int, threads: int | None, model: str, batches: int) -> dict:
    env = dict(os.environ)
    env.pop("AEGIS_NUM_THREADS", None)
    if threads is not None:
        env["AEGIS_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, __file__, "--job", "--model", model, "--batches", str(batches)]
    t0 = time.perf_counter()
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True) for _ in range(n_jobs)]
    outs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    wall = time.perf_counter() - t0
    if any(p.returncode for p in procs):
        raise RuntimeError("a job failed")
    return {"seconds": max(o["seconds"] for o in outs), "images": sum(o["images"] for o in outs),
            "threads": outs[0]["threads"], "wall_with_startup": wall}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--job", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", default="resnet18", choices=["resnet18", "small_vgg"])
    p.add_argument("--batches", type=int, default=6)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    if args.job:
        job(args.model, args.batches)
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    settings = [("one job, every core", 1, None), ("two jobs, every core each (default)", 2, None),
                (f"two jobs, {max(1, cores // 2)} thread(s) each (the knob)", 2, max(1, cores // 2))]
    rows = {name: [] for name, _, _ in settings}
    for _ in range(args.repeats):  # interleaved, so that drifting machine load hits every setting alike
        for name, n, threads in settings:
            rows[name].append(run_jobs(n, threads, args.model, args.batches))
    alone = statistics.median(r["images"] / r["seconds"] for r in rows[settings[0][0]])
    print(f"## Concurrent screening jobs: {args.model}, {cores} cores, {args.batches} batches per job, "
          f"median of {args.repeats}\n")
    print("| setting | threads per job | s per job (slowest) | images / s (machine) | vs one job alone |")
    print("|---|---:|---:|---:|---:|")
    for name, _, _ in settings:
        secs = statistics.median(r["seconds"] for r in rows[name])
        ips = statistics.median(r["images"] / r["seconds"] for r in rows[name])
        print(f"| {name} | {rows[name][0]['threads']} | {secs:.2f} | {ips:.1f} | {ips / alone:.2f}x |")


if __name__ == "__main__":
    main()
