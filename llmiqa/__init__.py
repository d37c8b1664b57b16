"""llmiqa: training-free image quality assessment with multimodal LLMs (LLM-IQA / Dog-IQA)."""

__version__ = "0.1.0"
