from .configuration_st2si import ST2SIConfig
from .modeling_st2si import ST2SIForItemPrediction, ST2SIOutput, ST2SIPreTrainedModel, ST2SIRecommendationOutput

__all__ = ["ST2SIConfig", "ST2SIForItemPrediction", "ST2SIOutput", "ST2SIPreTrainedModel", "ST2SIRecommendationOutput"]
