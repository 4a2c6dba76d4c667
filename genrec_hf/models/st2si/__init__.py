from .configuration_st2si import ST2SIConfig
from .modeling_st2si import ST2SIForItemPrediction, ST2SIOutput, ST2SIPreTrainedModel, ST2SIRecommendationOutput
from .processing_st2si import ST2SIFormat, ST2SIProcessor

__all__ = ["ST2SIConfig", "ST2SIForItemPrediction", "ST2SIOutput", "ST2SIPreTrainedModel", "ST2SIProcessor",
           "ST2SIFormat", "ST2SIRecommendationOutput"]
