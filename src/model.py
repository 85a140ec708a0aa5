"""The fitted model as MLflow logs it: the model module's `predict` (its artifact `formula`, a copy of
src/models/NAME.py), with w and b from its artifact `fit.json`.

This file is logged as code (MLflow's "models from code"), so a loaded model needs numpy and
mlflow only: `mlflow.pyfunc.load_model("models:/autograd-fit@best").predict(pd.DataFrame({"x": [...]}))`.
"""

import importlib.util
import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd


class FittedModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        fit = json.loads(Path(context.artifacts["fit"]).read_text())  # not model_config: MLflow would log
        self.w, self.b = float(fit["w"]), float(fit["b"])  # it as the run's params, beside the hyperparameters
        spec = importlib.util.spec_from_file_location("fitted_formula", context.artifacts["formula"])
        self.formula = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(self.formula)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> np.ndarray:
        x = np.asarray(model_input["x"], dtype=np.float64).reshape(-1, 1)
        return self.formula.predict(self.formula.features(x), np.full((1, 1), self.w), np.full((1, 1), self.b)).ravel()


mlflow.models.set_model(FittedModel())
