"""One folder per method (configuration_*.py, modeling_*.py), each self-contained for Hub remote code.
Importing this package registers every config and model with the Auto classes."""

from transformers import AutoConfig, AutoModel

from .st2si import ST2SIConfig, ST2SIForItemPrediction

AutoConfig.register(ST2SIConfig.model_type, ST2SIConfig, exist_ok=True)
AutoModel.register(ST2SIConfig, ST2SIForItemPrediction, exist_ok=True)

# method name (CLI, processor) -> model class
METHOD_MODELS = {"st2si": ST2SIForItemPrediction}

__all__ = ["METHOD_MODELS", "ST2SIConfig", "ST2SIForItemPrediction"]
