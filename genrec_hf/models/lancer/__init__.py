from .configuration_lancer import LancerConfig
from .modeling_lancer import LancerForSeqRec, LancerPreTrainedModel, LancerRecommendationOutput
from .processing_lancer import LancerFormat, LancerProcessor

__all__ = ["LancerConfig", "LancerForSeqRec", "LancerFormat", "LancerPreTrainedModel", "LancerProcessor",
           "LancerRecommendationOutput"]
