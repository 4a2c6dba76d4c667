"""SeqRecProcessor: any method's processor, picked by `method`.

    processor = SeqRecProcessor(tokenizer, catalog, method="st2si")   # or "genrec", "lancer", "recsys_glm"
    processor = SeqRecProcessor(None, catalog, method="sasrec")       # item-ID models ("sasrec", "gru4rec"): no text
    inputs = processor(histories, return_tensors="pt")      # histories: lists of catalog ids
    model(**inputs); model.recommend(**inputs, top_k=10)
    processor.decode_items(out.item_ids)                      # titles
    SeqRecProcessor.from_pretrained(folder)                   # the method it was saved with

Each method's input format and processor class live next to its model
(`models/<method>/processing_<method>.py`: `ST2SIProcessor`, `GenRecProcessor`, `LancerProcessor`,
`RecSysGLMProcessor`), on the shared
`SeqRecProcessorBase` (`data/processing_base.py`, symlinked into each model folder), so they ship
with a checkpoint as Hub remote code. Item texts are tokenized once and cached, so building a
batch is list concatenation. Histories are truncated from the left by whole items (never
mid-item): the last `max_items` items, then, if `max_length` is set, older items are dropped
until the tokens fit.
"""

from __future__ import annotations

import abc
import os

from .data.processing_base import PAD_VALUES, PROCESSOR_CONFIG, load_processor_config
from .models.genrec.processing_genrec import GENREC_DEFAULTS, GenRecFormat, GenRecProcessor
from .models.gru4rec.processing_gru4rec import GRU4RecProcessor
from .models.lancer.processing_lancer import LANCER_DEFAULTS, LancerFormat, LancerProcessor
from .models.recsys_glm.processing_recsys_glm import RECSYS_GLM_DEFAULTS, RecSysGLMFormat, RecSysGLMProcessor
from .models.sasrec.processing_sasrec import SASRecProcessor
from .models.st2si.processing_st2si import ST2SI_DEFAULTS, ST2SIFormat, ST2SIProcessor

# method name -> its processor class (a new method adds its processing_<method>.py class here)
PROCESSORS = {"st2si": ST2SIProcessor, "genrec": GenRecProcessor, "lancer": LancerProcessor, "recsys_glm": RecSysGLMProcessor,
              "sasrec": SASRecProcessor, "gru4rec": GRU4RecProcessor}
METHODS = tuple(PROCESSORS)
FORMATS = {method: cls.format_class for method, cls in PROCESSORS.items()}


def processor_class(method: str) -> type:
    if method not in PROCESSORS:
        raise ValueError(f"unknown method {method!r}: use one of {METHODS}")
    return PROCESSORS[method]


class SeqRecProcessor(abc.ABC):
    """Any method's processor: `SeqRecProcessor(tokenizer, catalog, method=..., **settings)` builds
    that method's class, `from_pretrained` the class a folder was saved with, and
    `isinstance(p, SeqRecProcessor)` holds for every method's processor."""

    def __new__(cls, tokenizer, catalog, method: str = "st2si", **settings):
        return processor_class(method)(tokenizer, catalog, **settings)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs):
        """The processor saved in a checkpoint folder or Hub repo (settings in kwargs override)."""
        config, _ = load_processor_config(pretrained_model_name_or_path, **kwargs)
        return processor_class(config.get("method")).from_pretrained(pretrained_model_name_or_path, **kwargs)


for _cls in PROCESSORS.values():
    SeqRecProcessor.register(_cls)

__all__ = [
    "FORMATS", "GENREC_DEFAULTS", "LANCER_DEFAULTS", "METHODS", "PAD_VALUES", "PROCESSORS", "PROCESSOR_CONFIG", "ST2SI_DEFAULTS", "RECSYS_GLM_DEFAULTS",
    "GRU4RecProcessor", "GenRecFormat", "GenRecProcessor", "SASRecProcessor", "LancerFormat", "LancerProcessor", "RecSysGLMFormat", "RecSysGLMProcessor", "ST2SIFormat", "ST2SIProcessor", "SeqRecProcessor", "processor_class",
]
