"""Forward + backward time of the ``apl`` preset against BCE-with-logits on CPU.

Usage: .venv/bin/python benchmarks/loss_speed.py [--reps 200] [--threads 2] [--cold]
       .venv/bin/python benchmarks/loss_speed.py --robust [--reps 40] [--threads 2]

``--robust`` times Hill, SPLC, Distribution-Balanced and Two-way (defaults of their presets,
5% positives) against BCE-with-logits at 256x1000 and 4096x1000 instead, interleaved the
same way, and prints each one's median ratio to BCE (and the ratio of the best times), by
the wall clock and by this thread's CPU time (the steadier one on a loaded machine).

Prints, per shape and dtype, the median (and best) time of BCE-with-logits, of our
fused loss (compiled), of the same fused body run eagerly (the fallback), and of a
straightforward unfused autograd chain, with ratios to BCE; plus the first-call
compile time. Timings interleave the implementations rep by rep so that load from
other processes on a shared machine hits all of them alike. ``--cold`` points the
inductor cache at an empty directory so the compile time is a cold one.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

SHAPES = ((256, 1000), (64, 9605))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cold", action="store_true", help="compile with an empty inductor cache")
    parser.add_argument("--dtypes", default="float32", help="comma separated: float32,bfloat16,float16")
    parser.add_argument("--robust", action="store_true", help="time hill, splc, dbl and twoway instead")
    args = parser.parse_args()
    if args.robust:
        robust(args.reps, args.threads)
        return
    if args.cold:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-cold-")

    import torch
    import torch.nn.functional as F

    from apl.losses import asymmetric_polynomial_loss
    from apl.losses.reference import reference_loss
    from apl.spec import LOSS_PRESETS

    torch.set_num_threads(args.threads)
    params = LOSS_PRESETS["apl"]
    python = sys.version.split()[0]
    print(f"torch {torch.__version__}, python {python}, threads {torch.get_num_threads()}, reps {args.reps}")

    header = (
        f"{'shape':>10} {'dtype':>9} {'BCE ms':>8} {'ours ms':>8} {'ratio':>6} "
        f"{'best':>6} {'eager-fused':>11} {'unfused':>8}"
    )
    lines = [header]
    for dtype_name in args.dtypes.split(","):
        dtype = getattr(torch, dtype_name)
        for shape in SHAPES:
            gen = torch.Generator().manual_seed(0)
            x = (torch.randn(shape, generator=gen) * 3).to(dtype).requires_grad_()
            y = (torch.rand(shape, generator=gen) < 0.05).to(dtype)

            def step(loss_fn: Callable[[], torch.Tensor], x: torch.Tensor = x) -> None:
                loss_fn().backward()
                x.grad = None

            impls: dict[str, Callable[[], torch.Tensor]] = {
                "bce": lambda x=x, y=y: F.binary_cross_entropy_with_logits(x, y, reduction="sum"),
                "ours": lambda x=x, y=y: asymmetric_polynomial_loss(x, y, **params, backend="compiled"),
                "eager": lambda x=x, y=y: asymmetric_polynomial_loss(x, y, **params, backend="eager"),
                "unfused": lambda x=x, y=y: reference_loss(x, y, **params),
            }
            start = time.perf_counter()
            step(impls["ours"])
            first = time.perf_counter() - start
            lines.insert(0, f"first call (compile) {shape} {dtype_name}: {first:.2f} s")
            for fn in impls.values():
                for _ in range(5):
                    step(fn)
            times: dict[str, list[float]] = {name: [] for name in impls}
            for rep in range(args.reps):
                light = rep % 4 != 0  # the slow ones every 4th rep only
                for name, fn in impls.items():
                    if light and name in ("eager", "unfused"):
                        continue
                    start = time.perf_counter()
                    step(fn)
                    times[name].append(time.perf_counter() - start)
            med = {name: statistics.median(t) for name, t in times.items()}
            best = {name: min(t) for name, t in times.items()}
            label = "x".join(map(str, shape))
            lines.append(
                f"{label:>10} {dtype_name:>9} {med['bce'] * 1e3:8.3f} {med['ours'] * 1e3:8.3f} "
                f"{med['ours'] / med['bce']:6.2f} {best['ours'] / best['bce']:6.2f} "
                f"{med['eager'] / med['bce']:11.2f} {med['unfused'] / med['bce']:8.2f}"
            )
    print("\n".join(lines))
    print("ratio = median(ours)/median(BCE); best = min(ours)/min(BCE); eager-fused, unfused: median ratios")


ROBUST_SHAPES = ((256, 1000), (4096, 1000))


def _robust_impls(x: Any, y: Any) -> dict[str, Callable[[], Any]]:
    import torch.nn.functional as F

    from apl.losses import DistributionBalancedLoss, hill_loss, splc_loss, two_way_loss

    counts = (y.sum(0) + 5).tolist()  # a training split's counts: every label seen at least 5 times
    # As the training loop builds it: the label statistics computed once, in the module.
    dbl = DistributionBalancedLoss(label_counts=counts, num_samples=100_000)
    return {
        "bce": lambda: F.binary_cross_entropy_with_logits(x, y, reduction="sum"),
        "hill": lambda: hill_loss(x, y),
        "splc": lambda: splc_loss(x, y),
        "dbl": lambda: dbl(x, y),
        "twoway": lambda: two_way_loss(x, y, reduction="sum"),
    }


def _time_interleaved(impls: dict[str, Callable[[], Any]], x: Any, reps: int) -> dict[str, list[list[float]]]:
    """Wall and CPU (this thread's) seconds of each forward + backward, rep by rep interleaved.

    With one thread every kernel runs in this thread, so its CPU time leaves out the time
    the scheduler gave to other processes: on a shared, loaded machine it is the steadier
    of the two.
    """
    times: dict[str, list[list[float]]] = {name: [[], []] for name in impls}
    for _ in range(reps):
        for name, fn in impls.items():
            wall, cpu = time.perf_counter(), time.thread_time()
            fn().backward()
            x.grad = None
            times[name][1].append(time.thread_time() - cpu)
            times[name][0].append(time.perf_counter() - wall)
    return times


def robust(reps: int, threads: int) -> None:
    """Forward + backward of the new losses against BCE-with-logits, rep by rep interleaved."""
    import torch

    torch.set_num_threads(threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, reps {reps} (4096 rows: reps/4)")
    names = ("hill", "splc", "dbl", "twoway")
    lines = [f"{'shape':>10} {'clock':>5} {'BCE ms':>8} " + " ".join(f"{n:>14}" for n in names)]
    for shape in ROBUST_SHAPES:
        gen = torch.Generator().manual_seed(0)
        x = (torch.randn(shape, generator=gen) * 3).requires_grad_()
        y = (torch.rand(shape, generator=gen) < 0.05).float()
        impls = _robust_impls(x, y)
        for name, fn in impls.items():
            start = time.perf_counter()
            fn().backward()
            x.grad = None
            if name != "bce":
                lines.insert(0, f"first call (compile) {name} {shape}: {time.perf_counter() - start:.2f} s")
        times = _time_interleaved(impls, x, reps if shape[0] < 1024 else max(reps // 4, 5))
        for clock, index in (("wall", 0), ("cpu", 1)):
            med = {name: statistics.median(t[index]) for name, t in times.items()}
            best = {name: min(t[index]) for name, t in times.items()}
            cells = [f"{med[n] / med['bce']:5.2f} ({best[n] / best['bce']:4.2f})" for n in names]
            lines.append(
                f"{'x'.join(map(str, shape)):>10} {clock:>5} {med['bce'] * 1e3:8.2f} "
                + " ".join(f"{c:>14}" for c in cells)
            )
    print("\n".join(lines))
    print(
        "each loss: median(loss)/median(BCE) (min(loss)/min(BCE)); forward + backward, float32 CPU; "
        "wall: perf_counter, cpu: thread_time"
    )


if __name__ == "__main__":
    main()
