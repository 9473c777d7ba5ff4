"""emdir: find, test and transfer emergent-misalignment directions in language models."""

from emdir.errors import EmdirError
from emdir.schema import schema_defaults

__version__ = "0.1.0"

__all__ = ["EmdirError", "__version__", "schema_defaults"]
