from .configuration_genrec import GenRecConfig
from .modeling_genrec import GenRecForConditionalGeneration, GenRecPreTrainedModel, GenRecRecommendationOutput

__all__ = ["GenRecConfig", "GenRecForConditionalGeneration", "GenRecPreTrainedModel", "GenRecRecommendationOutput"]
