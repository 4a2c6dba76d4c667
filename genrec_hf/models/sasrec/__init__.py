from .configuration_sasrec import SASRecConfig
from .modeling_sasrec import SASRecForSeqRec, SASRecPreTrainedModel
from .processing_sasrec import SASRecProcessor

__all__ = ["SASRecConfig", "SASRecForSeqRec", "SASRecPreTrainedModel", "SASRecProcessor"]
