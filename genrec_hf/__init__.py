"""genrec_hf: HuggingFace-native LLM-based sequential recommenders.

Importing the package registers every method's config and model with the Auto classes.
"""

from . import models
from .data import ItemCatalog, load_sequences
from .models import (
    GenRecConfig,
    GRU4RecConfig,
    GRU4RecForSeqRec,
    GenRecForConditionalGeneration,
    LancerConfig,
    LancerForSeqRec,
    RecSysGLMConfig,
    RecSysGLMForInfilling,
    SASRecConfig,
    SASRecForSeqRec,
    ST2SIConfig,
    ST2SIForItemPrediction,
)
from .pipeline import SeqRecPipeline
from .processing import SeqRecProcessor
from .version import __version__

__all__ = [
    "GenRecConfig",
    "GenRecForConditionalGeneration",
    "GRU4RecConfig",
    "GRU4RecForSeqRec",
    "ItemCatalog",
    "LancerConfig",
    "LancerForSeqRec",
    "RecSysGLMConfig",
    "RecSysGLMForInfilling",
    "SASRecConfig",
    "SASRecForSeqRec",
    "ST2SIConfig",
    "ST2SIForItemPrediction",
    "SeqRecPipeline",
    "SeqRecProcessor",
    "__version__",
    "load_sequences",
    "models",
]
