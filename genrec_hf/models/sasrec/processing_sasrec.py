"""SASRec's input format and processor: catalog ids + 1, no text (see processing_item_ids.py).

    processor = SASRecProcessor(None, catalog, max_items=50)   # = SeqRecProcessor(None, catalog, method="sasrec")
    model.recommend(**processor(histories), top_k=10)
"""

from .processing_item_ids import ItemIDProcessor


class SASRecProcessor(ItemIDProcessor):
    method = "sasrec"


SASRecProcessor.register_for_auto_class()

__all__ = ["SASRecProcessor"]
