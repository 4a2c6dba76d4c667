"""Collators, datasets and Trainer metrics per method."""

from .genrec import GenRecCollator, genrec_datasets
from .lancer import LancerCollator, LancerItemVectorsCallback, LancerKnowledgeCollator, knowledge_dataset, lancer_datasets
from .recsys_glm import (
    RecSysGLMMultiTaskCollator,
    RecSysGLMNextItemCollator,
    RecSysGLMPretrainCollator,
    recsys_glm_datasets,
    recsys_glm_task_dataset,
)
from .ranking import SELECT_ON_VALIDATION, RankingMetrics, RecommenderEvalCallback, keep_labelled_logits, parse_selecting_on_validation
from .draws import EpochDraws, EpochDrawsCallback
from .st2si import (
    QueryStateCollator,
    RandomWindowRows,
    RandomWindowStates,
    SeqRecCollator,
    draw_training_span,
    alignment_rows,
    evaluation_rows,
    extract_query_states,
    ilp_feature_datasets,
    sequence_rows,
    st2si_datasets,
    training_windows,
)

__all__ = [
    "GenRecCollator",
    "LancerCollator",
    "LancerItemVectorsCallback",
    "LancerKnowledgeCollator",
    "knowledge_dataset",
    "lancer_datasets",
    "RankingMetrics",
    "RecSysGLMNextItemCollator",
    "RecSysGLMPretrainCollator",
    "recsys_glm_datasets",
    "recsys_glm_task_dataset",
    "RecSysGLMMultiTaskCollator",
    "RecommenderEvalCallback",
    "SELECT_ON_VALIDATION",
    "genrec_datasets",
    "QueryStateCollator",
    "EpochDraws",
    "EpochDrawsCallback",
    "RandomWindowRows",
    "RandomWindowStates",
    "SeqRecCollator",
    "draw_training_span",
    "alignment_rows",
    "evaluation_rows",
    "extract_query_states",
    "ilp_feature_datasets",
    "keep_labelled_logits",
    "parse_selecting_on_validation",
    "sequence_rows",
    "st2si_datasets",
    "training_windows",
]
