"""§2.5.1–2.5.3: what autograd records about each tensor, and what backward() does with it.

`python -m experiments.autograd_tour [x=2.0 seed=0]` builds the book's graph
z = w·x + b (x without grad, w and b leaves with grad), and records, from torch itself:
requires_grad / is_leaf / grad_fn for every node, the gradients after backward, that a
non-leaf's .grad stays None, that retain_graph=True lets a second backward accumulate
(the gradients double) while without it the second backward raises, and how no_grad(),
detach() and requires_grad_() stop or start tracking. It prints those findings as a table, and a
conclusion that checks them against what the book says.
"""

if __name__ == "__main__":  # first, before the heavy imports below (see src/infra/startup.py)
    from src.infra import startup

    startup.begin()

import math
import warnings
from dataclasses import dataclass

import hydra
import matplotlib.pyplot as plt
import torch
from hydra.core.config_store import ConfigStore
from matplotlib.figure import Figure

from experiments.report import Findings, conclude, record, significant
from src.errors import clean_exit


@dataclass
class TourConfig:
    x: float = 2.0  # the input, as in the book's x = torch.Tensor([2])
    seed: int = 0  # for w and b = randn(1)


def _node(t: torch.Tensor) -> dict:
    return {
        "requires_grad": t.requires_grad,
        "is_leaf": t.is_leaf,
        "grad_fn": type(t.grad_fn).__name__ if t.grad_fn is not None else None,
    }


def _grad(t: torch.Tensor) -> float | None:
    with warnings.catch_warnings():  # reading a non-leaf's .grad warns; that None is the point here
        warnings.simplefilter("ignore", UserWarning)
        return None if t.grad is None else t.grad.item()


def _graph(x_value: float, generator: torch.Generator):
    x = torch.tensor([x_value])
    w = torch.randn(1, generator=generator, requires_grad=True)
    b = torch.randn(1, generator=generator, requires_grad=True)
    y = torch.mul(w, x)
    z = torch.add(y, b)
    return x, w, b, y, z


def tour(x_value: float, seed: int) -> dict:
    """Everything the section shows, as recorded by torch."""
    generator = torch.Generator().manual_seed(seed)
    x, w, b, y, z = _graph(x_value, generator)
    report: dict = {"x": x.item(), "w": w.item(), "b": b.item()}
    report["nodes"] = {name: _node(t) for name, t in zip("xwbyz", (x, w, b, y, z), strict=True)}

    z.backward()
    report["after_backward"] = {f"{name}.grad": _grad(t) for name, t in zip("xwbyz", (x, w, b, y, z), strict=True)}
    try:
        z.backward()
        report["second_backward_without_retain_graph"] = "no error"
    except RuntimeError as e:
        report["second_backward_without_retain_graph"] = type(e).__name__
        report["second_backward_error"] = str(e).split(".")[0]

    x, w, b, y, z = _graph(x_value, torch.Generator().manual_seed(seed))
    z.backward(retain_graph=True)
    once = (w.grad.item(), b.grad.item())
    z.backward()
    report["retain_graph"] = {"w.grad once": once[0], "b.grad once": once[1], "w.grad twice": w.grad.item(),
                              "b.grad twice": b.grad.item()}  # fmt: skip

    with torch.no_grad():
        untracked = w * x + b
    detached = z.detach()
    x_tracked = torch.tensor([x_value]).requires_grad_()
    (w.detach() * x_tracked).sum().backward()
    report["stopping_and_starting"] = {
        "no_grad: w*x+b": _node(untracked),
        "z.detach()": _node(detached),
        "x.requires_grad_()": {**_node(x_tracked), "grad": x_tracked.grad.item()},
    }

    # The notebook's first cell: z = (x + y).sum() for 3x4 x, y; dz/dy is all ones.
    a = torch.randn(3, 4, generator=generator, requires_grad=True)
    c = torch.randn(3, 4, generator=generator, requires_grad=True)
    (a + c).sum().backward()
    report["sum_backward_grad_is_all_ones"] = bool(torch.equal(c.grad, torch.ones(3, 4)))
    return report


def findings(report: dict) -> Findings:
    """The tour's table and its conclusion against the book, from `tour`'s report."""
    nodes, grads, twice = report["nodes"], report["after_backward"], report["retain_graph"]
    stops = report["stopping_and_starting"]
    x, w = report["x"], report["w"]
    no_grad = [name for name in "xwbyz" if grads[f"{name}.grad"] is None]

    def names(key: str) -> str:
        return ", ".join(name for name in "xwbyz" if nodes[name][key])

    rows = [
        ("x, w, b", f"{significant(x, 4)}, {significant(w, 4)}, {significant(report['b'], 4)}"),
        ("leaves (is_leaf)", names("is_leaf")),
        ("requires_grad", names("requires_grad")),
        ("grad_fn", ", ".join(f"{n}: {nodes[n]['grad_fn']}" for n in "xwbyz" if nodes[n]["grad_fn"])),
        ("after z.backward(): w.grad", significant(grads["w.grad"], 4)),
        ("after z.backward(): b.grad", significant(grads["b.grad"], 4)),
        ("after z.backward(): .grad None", ", ".join(no_grad)),
        ("backward again, no retain_graph", report["second_backward_without_retain_graph"]),
        ("retain_graph, backward twice: w.grad", f"{significant(twice['w.grad once'], 4)} -> "
                                                 f"{significant(twice['w.grad twice'], 4)}"),
        ("retain_graph, backward twice: b.grad", f"{significant(twice['b.grad once'], 4)} -> "
                                                 f"{significant(twice['b.grad twice'], 4)}"),
        ("no_grad(): w*x+b requires_grad", str(stops["no_grad: w*x+b"]["requires_grad"])),
        ("z.detach(): requires_grad, is_leaf", f"{stops['z.detach()']['requires_grad']}, "
                                               f"{stops['z.detach()']['is_leaf']}"),
        ("x.requires_grad_(): grad of w·x", significant(stops["x.requires_grad_()"]["grad"], 4)),
        ("(x + y).sum(): y.grad all ones", str(report["sum_backward_grad_is_all_ones"])),
    ]  # fmt: skip
    checks = {
        "w.grad = x": math.isclose(grads["w.grad"], x, rel_tol=1e-6),
        "b.grad = 1": grads["b.grad"] == 1.0,
        ".grad None for x, y, z": no_grad == ["x", "y", "z"],
        "a second backward raises": report["second_backward_without_retain_graph"] == "RuntimeError",
        "retain_graph doubles the gradients": twice["w.grad twice"] == 2 * twice["w.grad once"]
        and twice["b.grad twice"] == 2 * twice["b.grad once"],
    }
    conclusion = conclude(
        "book §2.5: w.grad = x, b.grad = 1, no .grad for x (no grad) or the non-leaves, a second backward "
        "only with retain_graph=True (gradients add up)",
        f"w.grad = {significant(grads['w.grad'], 4)} at x = {significant(x, 4)}, b.grad = "
        f"{significant(grads['b.grad'], 4)}, .grad None for {', '.join(no_grad)}, second backward "
        f"{report['second_backward_without_retain_graph']}, retain_graph w.grad "
        f"{significant(twice['w.grad once'], 4)} -> {significant(twice['w.grad twice'], 4)}",
        checks,
    )
    return Findings(conclusion, ("finding", "value"), rows)


def plot_graph(report: dict) -> Figure:
    """The graph z = w·x + b, each node with what torch says about it."""
    positions = {"x": (0, 2), "w": (0, 1), "y": (1.3, 1.5), "b": (1.3, 0.4), "z": (2.6, 1.0)}
    edges = [("x", "y"), ("w", "y"), ("y", "z"), ("b", "z")]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    grads = report["after_backward"]
    boxes = {}
    for name, (px, py) in positions.items():
        node = report["nodes"][name]
        leaf = "leaf" if node["is_leaf"] else f"grad_fn={node['grad_fn']}"
        text = f"{name}\nrequires_grad={node['requires_grad']}\n{leaf}\ngrad={grads[f'{name}.grad']}"
        color = "#cde4ff" if node["requires_grad"] else "#eeeeee"
        boxes[name] = ax.text(px, py, text, ha="center", va="center", fontsize=8,
                              bbox={"boxstyle": "round", "facecolor": color})  # fmt: skip
    for start, end in edges:  # clipped at the boxes' edges, so that each arrowhead shows
        clip = {"patchA": boxes[start].get_bbox_patch(), "patchB": boxes[end].get_bbox_patch()}
        arrow = {"arrowstyle": "-|>", "color": "0.2", "shrinkA": 2, "shrinkB": 2, **clip}
        ax.annotate("", xy=positions[end], xytext=positions[start], arrowprops=arrow)
    ax.set_xlim(-0.6, 3.2)
    ax.set_ylim(0, 2.5)
    ax.axis("off")
    ax.set_title("z = w·x + b after z.backward()")
    fig.tight_layout()
    return fig


ConfigStore.instance().store(name="autograd_tour", node=TourConfig)


@hydra.main(version_base="1.3", config_path=None, config_name="autograd_tour")
def main(cfg: TourConfig) -> None:
    with clean_exit():
        report = tour(cfg.x, cfg.seed)
        figures = {"graph.png": plot_graph(report)}
        record("autograd_tour", cfg, report, findings(report), figures, backend="torch")


if __name__ == "__main__":
    main()
