"""emdir: find, test and transfer emergent-misalignment directions in language models."""

from emdir.errors import EmdirError

__version__ = "0.1.0"

__all__ = ["EmdirError", "__version__"]
