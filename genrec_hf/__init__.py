"""genrec_hf: HuggingFace-native LLM-based sequential recommenders."""

from .version import __version__

__all__ = ["__version__"]
