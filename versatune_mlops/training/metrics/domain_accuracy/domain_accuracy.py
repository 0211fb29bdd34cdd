"""Accuracy of multiple-choice predictions, as an `evaluate` metric module loaded from this folder.

`evaluate.load("accuracy")` needs the hub, which is unreachable here, so the project ships its own
module; `evaluate.load(<path of this folder>)` loads it offline.
"""

import datasets
import evaluate

_DESCRIPTION = "Fraction of multiple-choice items whose predicted choice index equals the reference."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted choice indices.
    references (list of int): correct choice indices.
Returns:
    accuracy (float): in [0, 1].
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class DomainAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references):
        if len(predictions) == 0:
            raise ValueError("No predictions: give at least one multiple-choice item.")
        correct = sum(int(p == r) for p, r in zip(predictions, references))
        return {"accuracy": correct / len(predictions)}
