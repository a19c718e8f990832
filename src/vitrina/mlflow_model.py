"""The model-from-code file of Vitrina's registered MLflow models (see :mod:`vitrina.registry`).

MLflow copies this file into every logged model and runs it on load; it names the
``pyfunc`` model class (``model_config["kind"]`` chooses CLIP embeddings or pair scores).
"""

import mlflow

from vitrina.registry import python_model_class

mlflow.models.set_model(python_model_class()())
