"""BLEU-4 and ROUGE-1/2/L of generated texts (explanations, review summaries) as an `evaluate`
module, offline: BLEU-4 is sacrebleu's corpus BLEU (13a tokenisation, 0-100, what
`evaluate.load("sacrebleu")` returns as "score"); ROUGE is Google's `rouge_score` F-measure
averaged over texts (0-1, what `evaluate.load("rouge")` returns with its defaults). The two
libraries are the ones those Hub modules wrap; this module only saves the download.

    import evaluate
    from genrec_hf.metrics import evaluate_module_path
    metric = evaluate.load(evaluate_module_path("text_overlap"))
    metric.compute(predictions=["a short text"], references=["the short text"])
    # {"bleu4": ..., "rouge1": ..., "rouge2": ..., "rougeL": ...}
"""

import datasets
import evaluate

_DESCRIPTION = __doc__

_KWARGS_DESCRIPTION = """
Args:
    predictions: generated texts.
    references: one reference text per prediction.
    use_stemmer: Porter stemming before ROUGE matching (evaluate's rouge default: False).
Returns:
    dict with bleu4 (0-100) and rouge1, rouge2, rougeL (mean F-measure, 0-1).
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class TextOverlap(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references, use_stemmer: bool = False):
        import sacrebleu
        from rouge_score import rouge_scorer

        if not predictions:
            raise ValueError("no texts to score")
        bleu = sacrebleu.corpus_bleu(list(predictions), [list(references)]).score
        scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=use_stemmer)
        totals = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
        for reference, prediction in zip(references, predictions):
            scores = scorer.score(reference, prediction)
            for key in totals:
                totals[key] += scores[key].fmeasure
        return {"bleu4": float(bleu), **{k: v / len(predictions) for k, v in totals.items()}}
