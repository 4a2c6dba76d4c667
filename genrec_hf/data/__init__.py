"""Datasets as chronological user sequences with leave-one-out splits (design.md §3)."""

from .catalog import CATALOG_FILE, TEMPLATES, ItemCatalog, render_item_text
from .sequences import FORMATS, MIN_SEQUENCE_LENGTH, SequenceData, load_sequences
from .sources import (
    DataFormatError,
    RawInteractions,
    read_amazon,
    read_interaction_table,
    read_item_table,
    read_ml1m,
    read_p5,
    read_recbole_atomic,
    recbole_ml100k_dir,
)

__all__ = [
    "CATALOG_FILE",
    "FORMATS",
    "MIN_SEQUENCE_LENGTH",
    "TEMPLATES",
    "DataFormatError",
    "ItemCatalog",
    "RawInteractions",
    "SequenceData",
    "load_sequences",
    "read_amazon",
    "read_interaction_table",
    "read_item_table",
    "read_ml1m",
    "read_p5",
    "read_recbole_atomic",
    "recbole_ml100k_dir",
    "render_item_text",
]
