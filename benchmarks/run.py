"""``make bench``: the full benchmark suite, i.e. ``rtdub bench`` with the same options.

    python -m benchmarks.run --out benchmarks/results [--quick] [any other `rtdub bench` option]
"""

from __future__ import annotations

import sys

from rtdub.cli.main import main as rtdub_main
from rtdub.quiet import install_native_log_filter


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # a real command line, as `rtdub` itself does
        install_native_log_filter()
    args = sys.argv[1:] if argv is None else argv
    return rtdub_main(["bench", *args])


if __name__ == "__main__":
    raise SystemExit(main())
