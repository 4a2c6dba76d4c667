"""One folder per method (configuration_*.py, modeling_*.py), each self-contained for Hub remote code.
Importing this package registers every config and model with the Auto classes."""

from transformers import AutoConfig, AutoModel, AutoModelForSeq2SeqLM, AutoProcessor

from .genrec import GenRecConfig, GenRecForConditionalGeneration
from .st2si import ST2SIConfig, ST2SIForItemPrediction

AutoConfig.register(ST2SIConfig.model_type, ST2SIConfig, exist_ok=True)
AutoModel.register(ST2SIConfig, ST2SIForItemPrediction, exist_ok=True)
AutoConfig.register(GenRecConfig.model_type, GenRecConfig, exist_ok=True)
AutoModel.register(GenRecConfig, GenRecForConditionalGeneration, exist_ok=True)
AutoModelForSeq2SeqLM.register(GenRecConfig, GenRecForConditionalGeneration, exist_ok=True)


def _register_processor() -> None:
    # the processor lives outside the model folders (it serves every method); registered here
    # so AutoProcessor.from_pretrained(checkpoint) returns a SeqRecProcessor
    from ..processing import SeqRecProcessor

    for config_class in (ST2SIConfig, GenRecConfig):
        AutoProcessor.register(config_class, SeqRecProcessor, exist_ok=True)


_register_processor()

# method name (CLI, processor) -> model class
METHOD_MODELS = {"st2si": ST2SIForItemPrediction, "genrec": GenRecForConditionalGeneration}

__all__ = ["METHOD_MODELS", "GenRecConfig", "GenRecForConditionalGeneration", "ST2SIConfig", "ST2SIForItemPrediction"]
