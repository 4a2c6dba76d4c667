"""Sequential-recommendation ranking metrics (HR@k, NDCG@k, MRR) as an `evaluate` module.

Full ranking with pessimistic ties, per-user means: the same code as `genrec_hf.metrics`, so
numbers from `evaluate.load(...)` and from genrec_hf's evaluator agree exactly.

    import evaluate
    from genrec_hf.metrics import evaluate_module_path
    metric = evaluate.load(evaluate_module_path())              # offline, by path
    metric.compute(predictions=scores, references=targets)       # scores: [batch, num_items]
    metric = evaluate.load(evaluate_module_path(), "ranked_list")
    metric.compute(predictions=ranked_ids, references=targets)   # ranked ids, -1 = padding
"""

import datasets
import evaluate
import torch

from genrec_hf.metrics import DEFAULT_KS
from genrec_hf.metrics import rank_metrics
from genrec_hf.metrics import ranked_list_metrics

_DESCRIPTION = __doc__

_KWARGS_DESCRIPTION = """
Args:
    predictions: per user, a score for every catalog item ("scores", the default config) or a
        ranked list of catalog ids with -1 as padding ("ranked_list" config).
    references: per user, the catalog id of the target item.
    ks: cut-offs for HR@k and NDCG@k (default 1, 5, 10, 20).
Returns:
    dict with hr@k, ndcg@k for each k and mrr, averaged over users.
"""

_CITATION = ""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SeqrecRanking(evaluate.Metric):
    def _info(self):
        value = datasets.Value("int64") if self.config_name == "ranked_list" else datasets.Value("float64")  # ranked in float64: no ties float32 would add
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Sequence(value), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, ks=DEFAULT_KS):
        if self.config_name == "ranked_list":
            return ranked_list_metrics(torch.tensor(predictions, dtype=torch.long), torch.tensor(references), ks)
        return rank_metrics(torch.tensor(predictions, dtype=torch.float64), torch.tensor(references), ks)
