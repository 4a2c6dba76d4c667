from .configuration_gru4rec import GRU4RecConfig
from .modeling_gru4rec import GRU4RecForSeqRec, GRU4RecPreTrainedModel
from .processing_gru4rec import GRU4RecProcessor

__all__ = ["GRU4RecConfig", "GRU4RecForSeqRec", "GRU4RecPreTrainedModel", "GRU4RecProcessor"]
