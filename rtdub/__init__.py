"""rtdub: streaming, real-time lip-sync dubbing."""

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
