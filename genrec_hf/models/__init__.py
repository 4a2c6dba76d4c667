"""One folder per method (configuration_*.py, modeling_*.py, processing_*.py), each self-contained for Hub remote code.
Importing this package registers every config, model and processor with the Auto classes."""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoProcessor

from .genrec import GenRecConfig, GenRecForConditionalGeneration, GenRecProcessor
from .gru4rec import GRU4RecConfig, GRU4RecForSeqRec, GRU4RecProcessor
from .lancer import LancerConfig, LancerForSeqRec, LancerProcessor
from .recsys_glm import GLMTextConfig, RecSysGLMConfig, RecSysGLMForInfilling, RecSysGLMProcessor
from .sasrec import SASRecConfig, SASRecForSeqRec, SASRecProcessor
from .st2si import ST2SIConfig, ST2SIForItemPrediction, ST2SIProcessor

AutoConfig.register(ST2SIConfig.model_type, ST2SIConfig, exist_ok=True)
AutoModel.register(ST2SIConfig, ST2SIForItemPrediction, exist_ok=True)
AutoConfig.register(GenRecConfig.model_type, GenRecConfig, exist_ok=True)
AutoModel.register(GenRecConfig, GenRecForConditionalGeneration, exist_ok=True)
AutoModelForSeq2SeqLM.register(GenRecConfig, GenRecForConditionalGeneration, exist_ok=True)
AutoConfig.register(LancerConfig.model_type, LancerConfig, exist_ok=True)
AutoModel.register(LancerConfig, LancerForSeqRec, exist_ok=True)
AutoModelForCausalLM.register(LancerConfig, LancerForSeqRec, exist_ok=True)
# "recsys_glm", never "glm": transformers owns that name for GLM-4 (a causal model, no blank infilling)
AutoConfig.register(RecSysGLMConfig.model_type, RecSysGLMConfig, exist_ok=True)
AutoConfig.register(GLMTextConfig.model_type, GLMTextConfig, exist_ok=True)  # the native GLM backbone's text_config
AutoModel.register(RecSysGLMConfig, RecSysGLMForInfilling, exist_ok=True)
# the classical item-ID references (issue 12): same API, same evaluator
AutoConfig.register(SASRecConfig.model_type, SASRecConfig, exist_ok=True)
AutoModel.register(SASRecConfig, SASRecForSeqRec, exist_ok=True)
AutoConfig.register(GRU4RecConfig.model_type, GRU4RecConfig, exist_ok=True)
AutoModel.register(GRU4RecConfig, GRU4RecForSeqRec, exist_ok=True)

# each method's processor (processing_<method>.py, next to its model) for AutoProcessor
AutoProcessor.register(ST2SIConfig, ST2SIProcessor, exist_ok=True)
AutoProcessor.register(GenRecConfig, GenRecProcessor, exist_ok=True)
AutoProcessor.register(LancerConfig, LancerProcessor, exist_ok=True)
AutoProcessor.register(RecSysGLMConfig, RecSysGLMProcessor, exist_ok=True)
AutoProcessor.register(SASRecConfig, SASRecProcessor, exist_ok=True)
AutoProcessor.register(GRU4RecConfig, GRU4RecProcessor, exist_ok=True)

# method name (CLI, processor) -> model class
METHOD_MODELS = {"st2si": ST2SIForItemPrediction, "genrec": GenRecForConditionalGeneration, "lancer": LancerForSeqRec,
                 "recsys_glm": RecSysGLMForInfilling, "sasrec": SASRecForSeqRec, "gru4rec": GRU4RecForSeqRec}

__all__ = [
    "METHOD_MODELS", "GRU4RecConfig", "GRU4RecForSeqRec", "GRU4RecProcessor", "SASRecConfig", "SASRecForSeqRec",
    "SASRecProcessor", "GenRecConfig", "GenRecForConditionalGeneration", "GenRecProcessor", "LancerConfig",
    "LancerForSeqRec", "LancerProcessor", "GLMTextConfig", "RecSysGLMConfig", "RecSysGLMForInfilling",
    "RecSysGLMProcessor", "ST2SIConfig",
    "ST2SIForItemPrediction", "ST2SIProcessor",
]
