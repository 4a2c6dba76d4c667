from .configuration_recsys_glm import GLMTextConfig, RecSysGLMConfig
from .modeling_recsys_glm import RecSysGLMForInfilling, RecSysGLMPreTrainedModel, RecSysGLMRecommendationOutput
from .processing_recsys_glm import RecSysGLMFormat, RecSysGLMProcessor

__all__ = ["GLMTextConfig", "RecSysGLMConfig", "RecSysGLMForInfilling", "RecSysGLMFormat", "RecSysGLMPreTrainedModel",
           "RecSysGLMProcessor", "RecSysGLMRecommendationOutput"]
