"""edgeformer: transformer inference on the CPU.

    import edgeformer
    model = edgeformer.load("path/to/hf-checkpoint")
    print(model.generate("Once upon a time", max_new_tokens=32).text)
"""

from . import _core
from ._version import __version__
from .model import GenerationResult, GenerationStream, Model, load


def cpu_info() -> dict:
    """The CPU's features (checked against the OS), the ISAs this build can run here, and the chosen one."""
    info = _core.cpu_info()
    info["isa"] = _core.active_isa()
    return info


__all__ = ["load", "Model", "GenerationResult", "GenerationStream", "cpu_info", "__version__"]
