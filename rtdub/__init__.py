"""rtdub: streaming, real-time lip-sync dubbing."""

import logging
import os

# OpenBLAS (numpy's BLAS) starts one worker per core that busy-waits after every call. The
# engine only makes small BLAS calls (alignment, mel filterbank, unit projection), but with
# a second worker the spinning took ~0.45 of the 2 cores in a streaming session (measured
# with rtdub.measure.loopbench), starving tracking and the generator. One BLAS thread unless the
# user chose otherwise; this takes effect only if numpy is imported after rtdub.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
