"""genrec_hf: HuggingFace-native LLM-based sequential recommenders.

`import genrec_hf` is light: it loads neither torch nor transformers. Each public name
(`ST2SIForItemPrediction`, `SeqRecProcessor`, `load_sequences`, ...) is imported on first access
(PEP 562), so `import genrec_hf.data` costs only the data layer.

Auto classes: importing `genrec_hf.models` registers every method's config, model and processor
with `AutoConfig` / `AutoModel` / `AutoProcessor`. Accessing any model, config, processor or
pipeline name here (`from genrec_hf import ST2SIForItemPrediction`) does that first; a bare
`import genrec_hf` does not. To load a saved folder with `AutoModel.from_pretrained(folder)`
without naming a class, call `genrec_hf.register_auto_classes()` (or `import genrec_hf.models`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .version import __version__

if TYPE_CHECKING:  # the real imports, for IDEs and type checkers
    from . import models
    from .data import ItemCatalog, load_sequences
    from .models import (
        GenRecConfig,
        GenRecForConditionalGeneration,
        GRU4RecConfig,
        GRU4RecForSeqRec,
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
    "register_auto_classes",
]

# public name -> submodule that defines it; every name outside .data registers the Auto classes first
_LAZY_NAMES = {
    **{name: ".models" for name in (
        "GenRecConfig", "GenRecForConditionalGeneration", "GRU4RecConfig", "GRU4RecForSeqRec", "LancerConfig",
        "LancerForSeqRec", "RecSysGLMConfig", "RecSysGLMForInfilling", "SASRecConfig", "SASRecForSeqRec",
        "ST2SIConfig", "ST2SIForItemPrediction")},
    "SeqRecPipeline": ".pipeline",
    "SeqRecProcessor": ".processing",
    "ItemCatalog": ".data",
    "load_sequences": ".data",
}
# submodules the package used to import eagerly: `genrec_hf.data` etc. still resolve after a bare import
_LAZY_SUBMODULES = ("data", "models", "pipeline", "processing")


def register_auto_classes() -> None:
    """Register every method's config, model and processor with the Auto classes (idempotent).

    After it, `AutoModel.from_pretrained(folder)` / `AutoProcessor.from_pretrained(folder)` load a
    genrec_hf checkpoint without naming its class. Same as `import genrec_hf.models`.
    """
    importlib.import_module(".models", __name__)


def __getattr__(name: str):
    if name in _LAZY_SUBMODULES:
        if name != "data":
            register_auto_classes()
        value = importlib.import_module(f".{name}", __name__)
    elif name in _LAZY_NAMES:
        module = _LAZY_NAMES[name]
        if module != ".data":
            register_auto_classes()
        value = getattr(importlib.import_module(module, __name__), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later accesses skip __getattr__
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__) | set(_LAZY_SUBMODULES))
