"""Benchmark: the pipeline's performance goals, measured in one run on this machine. Prints its
numbers; asserts none.

`python -m benchmarks.bench [--tiny] [--out bench]` prints, and writes to `<out>/bench.md`:

1. the goal table: each goal, this run's figure, and whether it is met;
2. end to end: `python -m src.train` against `benchmarks/floor.py` (the same job, hand-written),
   plain and with the pipeline's start-up trick, interleaved, min and median;
3. a sweep job's marginal cost, the `generate` stage, and `dvc repro -f` against its stages;
4. per-step cost of the book's loops (§2.6, §2.7 as written) against the two backends, for
   n = 1e2 ... 1e7, float32 and float64, and the numpy backend with the second core kept busy;
5. the numpy step at n = 1e7 against this machine's memory bandwidth; peak memory (RSS);
6. torch on cuda against the CPU at n = 1e7, float32, when a GPU is usable.

Every section records the load: the CPU time that other processes took while it ran, in cores.
A section where they took more than a quarter of a core is marked "under load". The machine's
load average and BLAS thread count head the report. `--tiny` runs every part on small sizes in
about a minute, so that the benchmark cannot rot. Cost against n is drawn in `<out>/per_step.png`.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import psutil  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from matplotlib import pyplot as plt  # noqa: E402

from src import models  # noqa: E402
from src.backends import numpy_gd, torch_gd  # noqa: E402
from src.models import quadratic  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DTYPES = ("float32", "float64")
OTHERS_BUSY = 0.25  # cores taken by other processes above which a section is "under load"


def book_numpy_loop(x, y, w1, b1, lr, steps):
    """§2.6's training loop, as written (x, y are (n, 1) columns; w1, b1 are (1, 1)); returns w1, b1
    and the loss of the last step."""
    for _ in range(steps):
        y_pred = np.power(x, 2) * w1 + b1
        loss = 0.5 * (y_pred - y) ** 2
        loss = loss.sum()
        grad_w = np.sum((y_pred - y) * np.power(x, 2))
        grad_b = np.sum(y_pred - y)
        w1 -= lr * grad_w
        b1 -= lr * grad_b
    return w1, b1, loss


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


class Load:
    """The CPU time that processes other than this one and its children took during a section, in cores."""

    def __enter__(self) -> Load:
        self._wall, self._ours, self._all = time.perf_counter(), self._our_cpu(), self._busy_cpu()
        return self

    def __exit__(self, *exc) -> None:
        wall = time.perf_counter() - self._wall
        others = (self._busy_cpu() - self._all) - (self._our_cpu() - self._ours)
        self.others = max(0.0, others / wall)

    @staticmethod
    def _our_cpu() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    @staticmethod
    def _busy_cpu() -> float:
        t = psutil.cpu_times()
        return t.user + t.nice + t.system + t.irq + t.softirq + t.steal


def _seconds(run) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def interleaved(runs: dict, repeats: int) -> dict[str, list[float]]:
    """Seconds of each of `runs` (name: callable), `repeats` times, taken in turn: A B C A B C ...,
    so that a busy moment of the machine falls on all of them alike."""
    times = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            times[name].append(_seconds(run))
    return times


def per_step(n: int, dtype: str, steps: int, repeats: int, loops=("book §2.6", "numpy backend", "book §2.7",
             "torch backend")) -> dict:  # fmt: skip
    """Seconds per step (min and median) of `loops`, and the numpy trajectories' largest relative gap."""
    x = np.linspace(-1, 1, n).astype(dtype)
    y = (models.values(quadratic, x, 3.0, 2.0) + 0.2 * np.random.default_rng(0).random(n)).astype(dtype)
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

    everything = {
        "book §2.6": book_numpy,
        "numpy backend": lambda: numpy_gd.fit(quadratic, x, y, w0, b0, lr=lr, steps=steps),
        "book §2.7": book_torch,
        "torch backend": lambda: torch_gd.fit(quadratic, x, y, w0, b0, lr=lr, steps=steps),
    }
    times = interleaved({name: everything[name] for name in loops}, repeats)
    w_book, b_book, _ = book_numpy()
    history = numpy_gd.fit(quadratic, x, y, w0, b0, lr=lr, steps=steps)
    gap = max(
        abs(history.w[-1] - w_book.item()) / abs(w_book.item()), abs(history.b[-1] - b_book.item()) / abs(b_book.item())
    )
    return {
        "per_step": {k: statistics.median(v) / steps for k, v in times.items()},
        "min_per_step": {k: min(v) / steps for k, v in times.items()},
        "numpy_gap": float(gap),
    }


def steps_for(n: int) -> int:
    return max(3, min(800, int(2e7 / n)))  # about the same work at every n


def with_busy_core(measure):
    """`measure()`, while one other process keeps a core busy, as a second job on the machine would."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.2)
        return measure()
    finally:
        spinner.kill()
        spinner.wait()


def numpy_vs_book(sizes: list[int], repeats: int) -> dict:
    return {n: per_step(n, "float64", steps_for(n), repeats, loops=("book §2.6", "numpy backend")) for n in sizes}


def page_faults_per_step(n: int) -> float:
    """Minor page faults per step of the torch backend on the CPU at n points, float64 (a 10-step fit's
    less a 5-step fit's, over 5): pages mapped afresh because the last step's arrays were unmapped."""
    import resource

    x = np.linspace(-1, 1, n)
    y = models.values(quadratic, x, 3.0, 2.0)
    fit = functools.partial(torch_gd.fit, quadratic)
    fit(x, y, 0.5, 0.5, lr=1.0 / n, steps=2)  # torch's first allocations

    def faults(steps: int) -> int:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        fit(x, y, 0.5, 0.5, lr=1.0 / n, steps=steps)
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    return max(0, faults(10) - faults(5)) / 5


def bandwidth() -> float:
    """Memory bandwidth in bytes per second: the best of 5 copies of 80 MB (read and written)."""
    source = np.ones(10**7)
    target = np.empty_like(source)
    return 2 * source.nbytes / min(_seconds(lambda: np.copyto(target, source)) for _ in range(5))


def _run(command: list[str], cwd: Path, env: dict) -> None:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"benchmark step failed: {' '.join(command)}\n{done.stderr[-3000:]}")


def _plain_env(folder: Path) -> dict:
    """This environment, with MLFLOW_TRACKING_URI set to a fresh SQLite store in `folder`."""
    return {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}"}


def end_to_end(repeats: int, warm: bool = True) -> dict[str, list[float]]:
    """Wall times of a default training run and of the two floors, interleaved, on warm stores
    (`warm=False`, for --tiny: the first repeat creates them)."""
    python = sys.executable
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        env = _plain_env(folder)
        commands = {
            "train": [python, "-m", "src.train", f"hydra.run.dir={folder / 'out'}"],
            "floor": [python, "-m", "benchmarks.floor"],
            "floor, lean start": [python, "-m", "benchmarks.floor", "--lean-start"],
        }
        runs = {name: lambda c=command: _run(c, folder, env) for name, command in commands.items()}
        if warm:  # create the store and the experiments first
            for run in runs.values():
                run()
        return interleaved(runs, repeats)


def sweep_marginal(jobs: int, repeats: int) -> dict[int, list[float]]:
    """Wall times of `jobs`- and 2×`jobs`-job sweeps (basic launcher, seeds 0..), each on a fresh store."""

    def sweep(count: int) -> None:
        with tempfile.TemporaryDirectory() as folder:
            seeds = ",".join(map(str, range(count)))
            _run([sys.executable, "-m", "src.train", "-m", f"seed={seeds}"], Path(folder), _plain_env(Path(folder)))

    times = interleaved({str(jobs): lambda: sweep(jobs), str(2 * jobs): lambda: sweep(2 * jobs)}, repeats)
    return {int(k): v for k, v in times.items()}


def generate_stage(repeats: int) -> list[float]:
    """Wall times of the `generate` stage's command, as dvc.yaml gives it."""
    with tempfile.TemporaryDirectory() as folder:
        outputs = ["--train", f"{folder}/train.csv", "--test", f"{folder}/test.csv", "--start", f"{folder}/start.json"]
        command = [sys.executable, "-m", "src.stages.generate", "--params", str(ROOT / "params.yaml"), *outputs]
        return interleaved({"generate": lambda: _run(command, ROOT, dict(os.environ))}, repeats)["generate"]


def dvc_overhead(repeats: int, warm: bool = True) -> dict[str, list[float]]:
    """Wall times of `dvc repro -f` and of the sum of its stages' commands run by hand, in a copy of
    the project (a fresh git repository, its own store and DVC cache), interleaved; after one
    `dvc repro` has made the outputs, the store and the cache (`warm=False`, for --tiny: not)."""
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    bin_dir = Path(sys.executable).parent
    with tempfile.TemporaryDirectory() as folder:
        repo = Path(folder) / "repo"
        for name in listed:
            if (ROOT / name).is_file():
                (repo / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, repo / name)
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
        setup = [["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "project"]]
        if warm:
            setup.append([str(bin_dir / "dvc"), "repro", "-q"])
        for command in setup:
            _run(command, repo, env)
        stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]

        def by_hand() -> None:
            for stage in stages.values():
                _run(["sh", "-c", stage["cmd"]], repo, env)

        return interleaved({"dvc repro -f": lambda: _run([str(bin_dir / "dvc"), "repro", "-f", "-q"], repo, env),
                            "stages by hand": by_hand}, repeats)  # fmt: skip


def peak_rss(command: list[str]) -> float:
    """Peak resident memory, in bytes, of `command`, run in a fresh folder with its own store."""
    probe = (
        "import resource, subprocess, sys; "
        "subprocess.run(sys.argv[1:], check=True, capture_output=True); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    with tempfile.TemporaryDirectory() as folder:
        env = {**_plain_env(Path(folder)), "PYTHONPATH": str(ROOT)}
        done = subprocess.run([sys.executable, "-c", probe, *command], env=env, cwd=folder, check=True,
                              capture_output=True, text=True)  # fmt: skip
    return int(done.stdout.strip()) * 1024  # ru_maxrss is in KiB on Linux


def train_command(*overrides: str) -> list[str]:
    return [sys.executable, "-m", "src.train", *overrides, "hydra.run.dir=out"]


def gpu(n: int, steps: int) -> dict | None:
    """Steps per second of the torch backend on cuda and on the CPU, float32; None without a GPU."""
    if not torch.cuda.is_available():
        return None
    x = np.linspace(-1, 1, n).astype("float32")
    y = models.values(quadratic, x, 3.0, 2.0)
    fit = functools.partial(torch_gd.fit, quadratic)
    fit(x, y, 0.5, 0.5, lr=1.0 / n, steps=10, device="cuda")  # warm-up: context, kernels
    rates = {}
    for device in ("cuda", "cpu"):
        seconds = statistics.median(
            _seconds(lambda d=device: fit(x, y, 0.5, 0.5, lr=1.0 / n, steps=steps, device=d)) for _ in range(3)
        )
        rates[device] = steps / seconds
    return {"device": torch.cuda.get_device_name(), **rates}


def machine() -> dict:
    from threadpoolctl import threadpool_info

    pools = ", ".join(f"{p['internal_api']} {p['num_threads']}" for p in threadpool_info())
    return {"cores": os.cpu_count(), "loadavg": os.getloadavg(), "blas_threads": pools or "none found"}


def measure(tiny: bool) -> dict:
    """Every section, in turn, each with the load that others put on the machine while it ran."""
    repeats = 1 if tiny else 5
    sizes = [100, 1000] if tiny else [100, 10**4, 10**5, 10**6, 10**7]
    busy_sizes = [1000, 10**4] if tiny else [10**4, 10**5, 10**6, 10**7]
    large_n = 1000 if tiny else 10**7
    results: dict = {"machine": machine(), "sizes": sizes, "busy_sizes": busy_sizes, "large_n": large_n, "load": {}}
    sections = {
        "end to end": lambda: end_to_end(repeats, warm=not tiny),
        "sweep": lambda: sweep_marginal(jobs=2 if tiny else 8, repeats=1 if tiny else 3),
        "generate": lambda: generate_stage(repeats),
        "dvc": lambda: dvc_overhead(1 if tiny else 2, warm=not tiny),
        "per step": lambda: {(n, d): per_step(n, d, steps_for(n), repeats) for n in sizes for d in DTYPES},
        "busy core": lambda: with_busy_core(lambda: numpy_vs_book(busy_sizes, repeats)),
        "bandwidth": bandwidth,
        "page faults": lambda: page_faults_per_step(large_n),
        "memory": lambda: {
            "train": peak_rss(train_command()),
            "floor": peak_rss([sys.executable, "-m", "benchmarks.floor"]),
            "rss": {
                b: (
                    peak_rss(train_command(f"backend={b}", "data.n=100", "steps=3", "lr=1e-9")),
                    peak_rss(train_command(f"backend={b}", f"data.n={large_n}", "steps=3", "lr=1e-9")),
                )
                for b in ("numpy", "torch")
            },  # fmt: skip
        },
        "gpu": lambda: gpu(n=large_n, steps=10 if tiny else 200),
    }
    for name, section in sections.items():
        with Load() as load:
            results[name] = section()
        results["load"][name] = load.others
        print(f"{name}: done ({load.others:.2f} cores taken by other processes)", flush=True)
    return results


def _ratio(a: list[float], b: list[float]) -> tuple[float, float]:
    """a / b by their minimums and by their medians."""
    return min(a) / min(b), statistics.median(a) / statistics.median(b)


def goals(r: dict) -> list[tuple[str, str, str, bool | None, str]]:
    """(measure, this run, goal, met, section) rows; met is None where this benchmark cannot tell."""
    e2e, sweep, dvc = r["end to end"], r["sweep"], r["dvc"]
    floor_min, floor_median = _ratio(e2e["train"], e2e["floor"])
    lean_min, lean_median = _ratio(e2e["train"], e2e["floor, lean start"])
    small, large = sorted(sweep)
    marginal = [(b - a) / (large - small) for a, b in zip(sweep[small], sweep[large], strict=True)]
    generate = r["generate"]
    dvc_min, dvc_median = _ratio(dvc["dvc repro -f"], dvc["stages by hand"])
    speedups = {n: v["per_step"]["book §2.6"] / v["per_step"]["numpy backend"] for n, v in r["busy core"].items()}
    gaps = max(v["numpy_gap"] for v in r["busy core"].values())
    n = r["large_n"]
    at_large = r["per step"][(n, "float64")]["min_per_step"]
    limit = 16 * n / r["bandwidth"]  # one pass reading x² and y: 16 bytes a point
    memory = r["memory"]
    worst = min(speedups, key=speedups.get)
    return [
        ("`python -m src.train` vs floor (same job, hand-written)", f"{floor_min:.2f}x min, {floor_median:.2f}x median",
         "≤ 0.8x", floor_median <= 0.8, "end to end"),
        ("same, vs floor with the start-up trick", f"{lean_min:.2f}x min, {lean_median:.2f}x median", "≤ 1.1x",
         lean_median <= 1.1, "end to end"),
        (f"marginal cost of one sweep job ({large} vs {small} jobs, basic launcher)",
         f"{min(marginal):.2f} s min, {statistics.median(marginal):.2f} s median", "≤ 0.3 s",
         statistics.median(marginal) <= 0.3, "sweep"),
        ("`generate` stage wall time", f"{min(generate):.2f} s min, {statistics.median(generate):.2f} s median",
         "≤ 0.5 s", statistics.median(generate) <= 0.5, "generate"),
        ("`dvc repro -f` vs the sum of its stage commands", f"{dvc_min:.2f}x min, {dvc_median:.2f}x median",
         "≤ 1.05x", dvc_median <= 1.05, "dvc"),
        (f"numpy step vs §2.6, n = {min(speedups):.0e} … {max(speedups):.0e}, second core busy",
         f"{speedups[worst]:.2f}x at worst (n = {worst:.0e}); trajectories {gaps:.1e} apart", "≥ 2x at every n",
         speedups[worst] >= 2, "busy core"),
        (f"numpy step at n = {n:.0e} float64 vs the memory-bandwidth limit",
         f"{at_large['numpy backend'] / limit:.1f}x ({_ms(at_large['numpy backend'])} vs {_ms(limit)} at "
         f"{r['bandwidth'] / 1e9:.1f} GB/s)", "≤ 4x", at_large["numpy backend"] / limit <= 4, "per step"),
        (f"torch step at n = {n:.0e} vs numpy step, float64",
         f"{at_large['torch backend'] / at_large['numpy backend']:.2f}x; torch: {r['page faults']:,.0f} page faults "
         "a step", "≤ 2.5x",
         at_large["torch backend"] / at_large["numpy backend"] <= 2.5, "per step"),
        ("peak RSS of a default run vs the floor's", f"{memory['train'] / memory['floor']:.2f}x "
         f"({_mb(memory['train'])} vs {_mb(memory['floor'])})", "≤ 1.0x", memory["train"] <= memory["floor"],
         "memory"),
        ("test suite on 2 cores", "not run here: `time make test`", "≤ 4 min", None, ""),
        ("fresh-clone set-up (`make run`, install included)", "not run here: `time make run` on a fresh clone",
         "≤ 1 min", None, ""),
    ]  # fmt: skip


def _markdown(r: dict) -> str:
    m = r["machine"]
    lines = [f"Machine: {m['cores']} cores; load average {' '.join(f'{v:.2f}' for v in m['loadavg'])} at the start; "
             f"BLAS threads: {m['blas_threads']}.", "",
             "## Goals", "", "| measure | this run | goal | met | load |",
             "| --- | --- | --- | --- | --- |"]  # fmt: skip
    for measure, figure, goal, met, section in goals(r):
        verdict = {True: "yes", False: "no", None: "-"}[met]
        load = r["load"].get(section)
        flag = "-" if load is None else f"{load:.2f} cores" + (" **under load**" if load > OTHERS_BUSY else "")
        lines.append(f"| {measure} | {figure} | {goal} | {verdict} | {flag} |")
    lines += ["", "Load: CPU time taken by other processes while the row's section ran, in cores.", ""]
    e2e = r["end to end"]
    lines += ["## End to end (wall seconds, interleaved)", "", "| command | min | median |", "| --- | --- | --- |"]
    for name, label in (("train", "`python -m src.train`"), ("floor", "`python -m benchmarks.floor`"),
                        ("floor, lean start", "`python -m benchmarks.floor --lean-start`")):  # fmt: skip
        lines.append(f"| {label} | {min(e2e[name]):.2f} | {statistics.median(e2e[name]):.2f} |")
    lines += ["", "## Sweeps, stages, DVC (wall seconds)", "", "| what | min | median |", "| --- | --- | --- |"]
    for jobs, times in sorted(r["sweep"].items()):
        lines.append(f"| {jobs}-job sweep | {min(times):.2f} | {statistics.median(times):.2f} |")
    lines.append(f"| `generate` stage | {min(r['generate']):.2f} | {statistics.median(r['generate']):.2f} |")
    for name, times in r["dvc"].items():
        lines.append(f"| {name} | {min(times):.2f} | {statistics.median(times):.2f} |")
    header = ("n", "dtype", "book §2.6", "numpy backend", "speed-up", "book §2.7", "torch backend", "speed-up",
              "numpy vs §2.6 (rel.)")  # fmt: skip
    lines += ["", "## Per step (median), book loop vs backend", ""]
    lines += ["| " + " | ".join(header) + " |", "|" + " --- |" * 9]
    for n in r["sizes"]:
        for dtype in DTYPES:
            v = r["per step"][(n, dtype)]
            t = v["per_step"]
            lines.append(
                f"| {n:.0e} | {dtype} | {_us(t['book §2.6'])} | {_us(t['numpy backend'])} | "
                f"{t['book §2.6'] / t['numpy backend']:.2f}x | {_us(t['book §2.7'])} | {_us(t['torch backend'])} | "
                f"{t['book §2.7'] / t['torch backend']:.2f}x | {v['numpy_gap']:.1e} |"
            )
    lines += ["", "## Per step (median), numpy, with the second core busy", "",
              "| n | book §2.6 | numpy backend | speed-up |", "| --- | --- | --- | --- |"]  # fmt: skip
    for n, v in r["busy core"].items():
        t = v["per_step"]
        lines.append(f"| {n:.0e} | {_us(t['book §2.6'])} | {_us(t['numpy backend'])} | "
                     f"{t['book §2.6'] / t['numpy backend']:.2f}x |")  # fmt: skip
    memory, n = r["memory"], r["large_n"]
    xy_bytes = 2 * n * 8
    lines += ["", f"## Peak RSS, n = {n:.0e} against n = 100 (3 steps, float64)", "",
              "| backend | n = 100 | large n | extra | x and y | extra / (x and y) |",
              "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for backend, (small, large) in memory["rss"].items():
        extra = large - small
        lines.append(f"| {backend} | {_mb(small)} | {_mb(large)} | {_mb(extra)} | {_mb(xy_bytes)} | "
                     f"{extra / xy_bytes:.2f}x |")  # fmt: skip
    lines += ["", "## GPU", ""]
    g = r["gpu"]
    lines.append(f"{g['device']}: {g['cuda']:.0f} steps/s on cuda, {g['cpu']:.1f} steps/s on the CPU, "
                 f"{g['cuda'] / g['cpu']:.1f}x" if g else "No usable GPU here: skipped.")  # fmt: skip
    return "\n".join(lines) + "\n"


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:,.1f} µs"


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.1f} ms"


def _mb(n_bytes: float) -> str:
    return f"{n_bytes / 2**20:,.0f} MiB"


def plot_per_step(results: dict):
    sizes = results["sizes"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, dtype in zip(axes, DTYPES, strict=True):
        for name, style in (
            ("book §2.6", "b--"),
            ("numpy backend", "b-o"),
            ("book §2.7", "r--"),
            ("torch backend", "r-o"),
        ):
            ax.plot(sizes, [results["per step"][(n, dtype)]["per_step"][name] for n in sizes], style, label=name)
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
    parser.add_argument("--tiny", action="store_true", help="small sizes, one repeat: about a minute")
    parser.add_argument("--out", default="bench", help="folder for bench.md and per_step.png")
    args = parser.parse_args(argv)
    results = measure(args.tiny)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = _markdown(results)
    (out / "bench.md").write_text(table)
    fig = plot_per_step(results)
    fig.savefig(out / "per_step.png", dpi=100)
    print(table)
    print(f"written: {out / 'bench.md'}, {out / 'per_step.png'}")


if __name__ == "__main__":
    main()
