"""The fitted model as MLflow logs it: y = w·x² + b, with w and b from the model's config.

This file is logged as code (MLflow's "models from code"), so a loaded model needs numpy and
mlflow only: `mlflow.pyfunc.load_model("models:/autograd-fit@best").predict(pd.DataFrame({"x": [...]}))`.
"""

import mlflow
import numpy as np
import pandas as pd


class Quadratic(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        self.w = float(context.model_config["w"])
        self.b = float(context.model_config["b"])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> np.ndarray:
        x = np.asarray(model_input["x"], dtype=np.float64)
        return self.w * x**2 + self.b


mlflow.models.set_model(Quadratic())
