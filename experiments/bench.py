"""Benchmark: what the pipeline costs beyond the work itself. Prints its numbers; asserts none.

`python -m experiments.bench [--tiny] [--out bench]` measures, on this machine, in one run:

1. per-step training cost of the book's own loops (§2.6 NumPy, §2.7 torch, as written)
   against the two backends, for n = 1e2 ... 1e7, float32 and float64, median of repeats,
   and how far the numpy backend's trajectory is from §2.6's;
2. end to end: `python -m src.train backend=numpy` against `experiments/floor.py`, the least
   any script could do for the same MLflow record;
3. peak memory (RSS) of a run at n = 1e7 against a run at n = 100, per byte of x and y;
4. torch on cuda against the CPU at n = 1e7, float32, when a GPU is usable.

It writes the tables to `<out>/bench.md` and cost against n to `<out>/per_step.png`.
`--tiny` runs every part on small sizes in seconds, so that the benchmark cannot rot.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib import pyplot as plt  # noqa: E402

from src.backends import load_fit  # noqa: E402

DTYPES = ("float32", "float64")


def book_numpy_loop(x, y, w1, b1, lr, steps):
    """§2.6's training loop, as written (x, y are (n, 1) columns; w1, b1 are (1, 1))."""
    for _ in range(steps):
        y_pred = np.power(x, 2) * w1 + b1
        loss = 0.5 * (y_pred - y) ** 2
        loss = loss.sum()
        grad_w = np.sum((y_pred - y) * np.power(x, 2))
        grad_b = np.sum(y_pred - y)
        w1 -= lr * grad_w
        b1 -= lr * grad_b
    return w1, b1


def book_torch_loop(x, y, w, b, lr, steps):
    """§2.7's training loop, as written."""
    for _ in range(steps):
        y_pred = x.pow(2).mm(w) + b
        loss = 0.5 * (y_pred - y) ** 2
        loss = loss.sum()
        loss.backward()
        with torch.no_grad():
            w -= lr * w.grad
            b -= lr * b.grad
            w.grad.zero_()
            b.grad.zero_()
    return w, b


def _median_seconds(run, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def per_step(n: int, dtype: str, steps: int, repeats: int) -> dict:
    """Seconds per step of the four loops, and the numpy trajectories' largest relative gap."""
    x = np.linspace(-1, 1, n).astype(dtype)
    y = (3 * x**2 + 2 + 0.2 * np.random.default_rng(0).random(n)).astype(dtype)
    w0, b0, lr = 0.5, 0.5, 1.0 / n  # lr well inside the stability bound (≈ 2.2 / n here)
    column = (n, 1)

    def book_numpy():
        return book_numpy_loop(x.reshape(column), y.reshape(column), np.full((1, 1), w0, dtype),
                               np.full((1, 1), b0, dtype), x.dtype.type(lr), steps)  # fmt: skip

    def book_torch():
        tx, ty = torch.from_numpy(x).reshape(column), torch.from_numpy(y).reshape(column)
        w = torch.full((1, 1), w0, dtype=tx.dtype, requires_grad=True)
        b = torch.full((1, 1), b0, dtype=tx.dtype, requires_grad=True)
        return book_torch_loop(tx, ty, w, b, lr, steps)

    fits = {name: load_fit(name) for name in ("numpy", "torch")}
    seconds = {
        "book §2.6": _median_seconds(book_numpy, repeats),
        "numpy backend": _median_seconds(lambda: fits["numpy"](x, y, w0, b0, lr=lr, steps=steps), repeats),
        "book §2.7": _median_seconds(book_torch, repeats),
        "torch backend": _median_seconds(lambda: fits["torch"](x, y, w0, b0, lr=lr, steps=steps), repeats),
    }
    w_book, b_book = book_numpy()
    history = fits["numpy"](x, y, w0, b0, lr=lr, steps=steps)
    gap = max(
        abs(history.w[-1] - w_book.item()) / abs(w_book.item()), abs(history.b[-1] - b_book.item()) / abs(b_book.item())
    )
    return {"per_step": {k: v / steps for k, v in seconds.items()}, "numpy_gap": float(gap)}


def _wall(command: list[str], env: dict, cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(command, env=env, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - started


def end_to_end(repeats: int) -> dict:
    """Median wall time of a default numpy training run and of the floor script, on warm stores."""
    python = sys.executable
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}"}
        train = [python, "-m", "src.train", "backend=numpy", f"hydra.run.dir={folder / 'out'}"]
        floor = [python, "-m", "experiments.floor"]
        _wall(train, env, folder), _wall(floor, env, folder)  # create the store and both experiments
        times = {"train": [], "floor": []}
        for _ in range(repeats):  # interleaved, so a busy moment hits both alike
            times["train"].append(_wall(train, env, folder))
            times["floor"].append(_wall(floor, env, folder))
    return {name: statistics.median(values) for name, values in times.items()}


def peak_rss(n: int, backend: str) -> float:
    """Peak resident memory, in bytes, of `python -m src.train` at data.n = n (3 steps)."""
    probe = (
        "import resource, subprocess, sys; "
        "subprocess.run(sys.argv[1:], check=True, capture_output=True); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    with tempfile.TemporaryDirectory() as folder:
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{Path(folder) / 'mlflow.db'}"}
        args = [f"backend={backend}", f"data.n={n}", "steps=3", "lr=1e-9", f"hydra.run.dir={folder}/out"]
        done = subprocess.run([sys.executable, "-c", probe, sys.executable, "-m", "src.train", *args],
                              env=env, cwd=folder, check=True, capture_output=True, text=True)  # fmt: skip
    return int(done.stdout.strip()) * 1024  # ru_maxrss is in KiB on Linux


def gpu(n: int, steps: int) -> dict | None:
    """Steps per second of the torch backend on cuda and on the CPU, float32; None without a GPU."""
    if not torch.cuda.is_available():
        return None
    x = np.linspace(-1, 1, n).astype("float32")
    y = (3 * x**2 + 2).astype("float32")
    fit = load_fit("torch")
    fit(x, y, 0.5, 0.5, lr=1.0 / n, steps=10, device="cuda")  # warm-up: context, kernels
    rates = {}
    for device in ("cuda", "cpu"):
        seconds = _median_seconds(lambda d=device: fit(x, y, 0.5, 0.5, lr=1.0 / n, steps=steps, device=d), 3)
        rates[device] = steps / seconds
    return {"device": torch.cuda.get_device_name(), **rates}


def _markdown(results: dict, sizes: list[int]) -> str:
    header = ("n", "dtype", "book §2.6", "numpy backend", "speed-up", "book §2.7", "torch backend", "speed-up",
              "numpy vs §2.6 (rel.)")  # fmt: skip
    lines = ["## Per step (median), book loop vs backend", "", "| " + " | ".join(header) + " |", "|" + " --- |" * 9]
    for n in sizes:
        for dtype in DTYPES:
            r = results["per_step"][(n, dtype)]
            t = r["per_step"]
            lines.append(
                f"| {n:.0e} | {dtype} | {_us(t['book §2.6'])} | {_us(t['numpy backend'])} | "
                f"{t['book §2.6'] / t['numpy backend']:.2f}x | {_us(t['book §2.7'])} | {_us(t['torch backend'])} | "
                f"{t['book §2.7'] / t['torch backend']:.2f}x | {r['numpy_gap']:.1e} |"
            )
    e2e = results["end_to_end"]
    lines += ["", "## End to end (median wall time)", "", "| command | seconds |", "| --- | --- |",
              f"| `python -m src.train backend=numpy` | {e2e['train']:.2f} |",
              f"| floor: `python -m experiments.floor` | {e2e['floor']:.2f} |",
              f"| ratio | {e2e['train'] / e2e['floor']:.2f}x |"]  # fmt: skip
    memory = results["memory"]
    lines += ["", f"## Peak RSS, n = {memory['n']:.0e} against n = 100 (3 steps, float64)", "",
              "| backend | n = 100 | large n | extra | x and y | extra / (x and y) |",
              "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for backend, (small, large) in memory["rss"].items():
        extra = large - small
        lines.append(f"| {backend} | {_mb(small)} | {_mb(large)} | {_mb(extra)} | {_mb(memory['xy_bytes'])} | "
                     f"{extra / memory['xy_bytes']:.2f}x |")  # fmt: skip
    lines += ["", "## GPU", ""]
    g = results["gpu"]
    lines.append(f"{g['device']}: {g['cuda']:.0f} steps/s on cuda, {g['cpu']:.1f} steps/s on the CPU, "
                 f"{g['cuda'] / g['cpu']:.1f}x" if g else "No usable GPU here: skipped.")  # fmt: skip
    return "\n".join(lines) + "\n"


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:,.1f} µs"


def _mb(n_bytes: float) -> str:
    return f"{n_bytes / 2**20:,.0f} MiB"


def plot_per_step(results: dict, sizes: list[int]):
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, dtype in zip(axes, DTYPES, strict=True):
        for name, style in (
            ("book §2.6", "b--"),
            ("numpy backend", "b-o"),
            ("book §2.7", "r--"),
            ("torch backend", "r-o"),
        ):
            ax.plot(sizes, [results["per_step"][(n, dtype)]["per_step"][name] for n in sizes], style, label=name)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("n (points)")
        ax.set_title(f"seconds per gradient step, {dtype}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("seconds per step (median)")
    axes[0].legend()
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="small sizes, one repeat: seconds, not minutes")
    parser.add_argument("--out", default="bench", help="folder for bench.md and per_step.png")
    args = parser.parse_args(argv)
    sizes = [100, 1000] if args.tiny else [100, 10**4, 10**5, 10**6, 10**7]
    repeats = 1 if args.tiny else 5
    large_n = 10**4 if args.tiny else 10**7

    results: dict = {"per_step": {}}
    for n in sizes:
        for dtype in DTYPES:
            steps = max(3, min(800, int(2e7 / n)))  # about the same work at every n
            results["per_step"][(n, dtype)] = per_step(n, dtype, steps, repeats)
            print(f"per step: n={n:.0e} {dtype} done", flush=True)
    results["end_to_end"] = end_to_end(repeats=1 if args.tiny else 5)
    results["memory"] = {
        "n": large_n,
        "xy_bytes": 2 * large_n * 8,
        "rss": {b: (peak_rss(100, b), peak_rss(large_n, b)) for b in ("numpy", "torch")},
    }
    results["gpu"] = gpu(n=large_n, steps=10 if args.tiny else 200)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = _markdown(results, sizes)
    (out / "bench.md").write_text(table)
    fig = plot_per_step(results, sizes)
    fig.savefig(out / "per_step.png", dpi=100)
    print(table)
    print(f"written: {out / 'bench.md'}, {out / 'per_step.png'}")


if __name__ == "__main__":
    main()
