from .configuration_genrec import GenRecConfig
from .modeling_genrec import GenRecForConditionalGeneration, GenRecPreTrainedModel, GenRecRecommendationOutput
from .processing_genrec import GenRecFormat, GenRecProcessor

__all__ = ["GenRecConfig", "GenRecForConditionalGeneration", "GenRecPreTrainedModel", "GenRecProcessor",
           "GenRecFormat", "GenRecRecommendationOutput"]
