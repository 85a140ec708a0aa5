"""§2.5.4: a Jacobian, row by row, from backward(gradient=v).

`python -m experiments.jacobian [x1=2 x2=3]` maps x = [[x1, x2]] to
y1 = x1² + 3·x2, y2 = x2² + 2·x1, and builds J = ∂y/∂x one row at a time with
`y.backward(gradient=e_i, retain_graph=True)`, zeroing x.grad between rows, as the book
does. J is compared with the analytic [[2·x1, 3], [2, 2·x2]] and with
`torch.autograd.functional.jacobian`. It also shows the book's warning: v = (1, 1) gives
the vector-Jacobian product vᵀJ, not J. It prints a table of these and a conclusion that checks
them against the book.
"""

if __name__ == "__main__":  # first, before the heavy imports below (see src/infra/startup.py)
    from src.infra import startup

    startup.begin()

from dataclasses import dataclass

import hydra
import matplotlib.pyplot as plt
import numpy as np
import torch
from hydra.core.config_store import ConfigStore
from matplotlib.figure import Figure

from experiments.report import Findings, conclude, numbers, record, significant
from src.errors import clean_exit


@dataclass
class JacobianConfig:
    x1: float = 2.0
    x2: float = 3.0


def f(x: torch.Tensor) -> torch.Tensor:
    """The book's map, written into a preallocated y as the book writes it."""
    y = torch.zeros(1, 2, dtype=x.dtype)
    y[0, 0] = x[0, 0] ** 2 + 3 * x[0, 1]
    y[0, 1] = x[0, 1] ** 2 + 2 * x[0, 0]
    return y


def jacobian_by_rows(x1: float, x2: float) -> tuple[np.ndarray, np.ndarray]:
    """(J from one backward per row, the product vᵀJ from a single backward with v = (1, 1))."""
    x = torch.tensor([[x1, x2]], dtype=torch.float64, requires_grad=True)
    y = f(x)
    rows = []
    for i in range(2):
        e_i = torch.zeros(1, 2, dtype=torch.float64)
        e_i[0, i] = 1
        y.backward(gradient=e_i, retain_graph=True)
        rows.append(x.grad[0].clone())
        x.grad.zero_()  # gradients accumulate: clear them between rows
    y.backward(gradient=torch.ones(1, 2, dtype=torch.float64))
    return torch.stack(rows).numpy(), x.grad[0].numpy()


def analyse(x1: float, x2: float) -> dict:
    J, vjp_ones = jacobian_by_rows(x1, x2)
    analytic = np.array([[2 * x1, 3.0], [2.0, 2 * x2]])
    x = torch.tensor([[x1, x2]], dtype=torch.float64)
    reference = torch.autograd.functional.jacobian(f, x).reshape(2, 2).numpy()
    return {
        "x": [x1, x2],
        "jacobian_by_rows": J.tolist(),
        "jacobian_analytic": analytic.tolist(),
        "jacobian_torch_functional": reference.tolist(),
        "max_abs_error_vs_analytic": float(np.abs(J - analytic).max()),
        "max_abs_error_vs_functional": float(np.abs(J - reference).max()),
        "backward_with_ones": vjp_ones.tolist(),
        "column_sums_of_J": analytic.sum(axis=0).tolist(),
    }


def _matrix(rows: list[list[float]]) -> str:
    return "[" + ", ".join(numbers(row, 6) for row in rows) + "]"


def findings(report: dict) -> Findings:
    """The Jacobian's table and its conclusion against the book, from `analyse`'s report."""
    J = report["jacobian_by_rows"]
    rows = [
        ("x", numbers(report["x"], 6)),
        ("J, one backward(e_i) per row", _matrix(J)),
        ("J, analytic [[2·x1, 3], [2, 2·x2]]", _matrix(report["jacobian_analytic"])),
        ("J, torch.autograd.functional", _matrix(report["jacobian_torch_functional"])),
        ("max |J − analytic|", significant(report["max_abs_error_vs_analytic"], 2)),
        ("max |J − functional|", significant(report["max_abs_error_vs_functional"], 2)),
        ("backward(v = (1, 1))", numbers(report["backward_with_ones"], 6)),
        ("column sums of J (vᵀJ)", numbers(report["column_sums_of_J"], 6)),
    ]
    exact = 1e-12  # J is a few products of small whole numbers in float64: any error is a wrong J
    checks = {
        "J equal to the analytic J": report["max_abs_error_vs_analytic"] <= exact,
        "J equal to torch.autograd.functional's": report["max_abs_error_vs_functional"] <= exact,
        "v = (1, 1) gives vᵀJ": np.allclose(report["backward_with_ones"], np.sum(J, axis=0), rtol=0, atol=exact),
    }
    conclusion = conclude(
        "book §2.5.4: one backward(gradient=e_i) per row, x.grad zeroed between rows, builds J; v = (1, 1) "
        "gives vᵀJ, not J",
        f"J = {_matrix(J)}, max error {significant(report['max_abs_error_vs_analytic'], 2)} against the analytic "
        f"J and {significant(report['max_abs_error_vs_functional'], 2)} against torch's; v = (1, 1) gave "
        f"{numbers(report['backward_with_ones'], 6)}, J's column sums {numbers(report['column_sums_of_J'], 6)}",
        checks,
    )
    return Findings(conclusion, ("finding", "value"), rows)


def plot_jacobian(report: dict) -> Figure:
    J = np.array(report["jacobian_by_rows"])
    fig, ax = plt.subplots(figsize=(4.5, 4))
    image = ax.imshow(J, cmap="Blues")
    for (i, j), value in np.ndenumerate(J):
        dark = image.norm(value) > 0.6  # black digits vanish on the darkest blues
        ax.text(j, i, f"{value:g}", ha="center", va="center", fontsize=14, color="white" if dark else "black")
    ax.set_xticks([0, 1], ["∂/∂x1", "∂/∂x2"])
    ax.set_yticks([0, 1], ["y1", "y2"])
    x1, x2 = report["x"]
    ax.set_title(f"J at x = ({x1:g}, {x2:g}); v = (1, 1) gives vᵀJ = {numbers(report['backward_with_ones'], 6)}",
                 fontsize=9)  # fmt: skip
    fig.tight_layout()
    return fig


ConfigStore.instance().store(name="jacobian", node=JacobianConfig)


@hydra.main(version_base="1.3", config_path=None, config_name="jacobian")
def main(cfg: JacobianConfig) -> None:
    with clean_exit():
        report = analyse(cfg.x1, cfg.x2)
        record("jacobian", cfg, report, findings(report), {"jacobian.png": plot_jacobian(report)}, backend="torch")


if __name__ == "__main__":
    main()
