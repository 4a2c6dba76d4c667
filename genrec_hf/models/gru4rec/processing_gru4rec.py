"""GRU4Rec's input format and processor: catalog ids + 1, no text (see processing_item_ids.py)."""

from .processing_item_ids import ItemIDProcessor


class GRU4RecProcessor(ItemIDProcessor):
    method = "gru4rec"


GRU4RecProcessor.register_for_auto_class()

__all__ = ["GRU4RecProcessor"]
