"""edgeformer: transformer inference on the CPU.

    import edgeformer
    model = edgeformer.load("path/to/hf-checkpoint")
    print(model.generate("Once upon a time", max_new_tokens=32).text)
"""

from . import _core
from ._version import __version__
from .device import cuda_available
from .model import GenerationResult, GenerationStream, Model, TokenLogprob, load
from .batching import Batcher, BatchRequest
from .grammar import Grammar, json_schema_to_gbnf


def quantize(src: str, out: str, type: str = "q4_0", threads: int = None) -> str:
    """Writes the checkpoint directory src as a GGUF file quantized to type (a block type: q8_0, q6_k, q5_k,
    q5_1, q5_0, q4_k, q4_1, q4_0, iq4_nl, iq4_xs, q3_k, q2_k; int8; or f16 / bf16 / f32), with llama.cpp's tensor names, metadata and tokenizer. Returns out."""
    from .gguf_io import quantize as _quantize

    return _quantize(src, out, type, threads)


def demo_model_path() -> str:
    """The small Llama trained on the Python documentation that ships inside the package."""
    import os

    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo_model")


def cpu_info() -> dict:
    """The CPU's features (checked against the OS), the ISAs this build can run here, and the chosen one."""
    info = _core.cpu_info()
    info["isa"] = _core.active_isa()
    return info


def cuda_info(device: int = 0) -> dict:
    """The CUDA device's name, compute capability, memory and bandwidth (RuntimeError without CUDA)."""
    return _core.cuda_device_info(device)


__all__ = ["load", "quantize", "demo_model_path", "Model", "GenerationResult", "GenerationStream", "TokenLogprob",
           "Batcher", "BatchRequest", "Grammar", "json_schema_to_gbnf", "cpu_info", "cuda_available", "cuda_info", "__version__"]
