"""The fitted model as MLflow logs it: y = w·x² + b, with w and b from its artifact `fit.json`.

This file is logged as code (MLflow's "models from code"), so a loaded model needs numpy and
mlflow only: `mlflow.pyfunc.load_model("models:/autograd-fit@best").predict(pd.DataFrame({"x": [...]}))`.
"""

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd


class Quadratic(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        fit = json.loads(Path(context.artifacts["fit"]).read_text())  # not model_config: MLflow would log
        self.w, self.b = float(fit["w"]), float(fit["b"])  # it as the run's params, beside the hyperparameters

    def predict(self, context, model_input: pd.DataFrame, params=None) -> np.ndarray:
        x = np.asarray(model_input["x"], dtype=np.float64)
        return self.w * x**2 + self.b


mlflow.models.set_model(Quadratic())
