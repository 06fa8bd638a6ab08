"""``rtdub bench``: latency, throughput, lookahead trade-off and quality, with plots.

    rtdub bench [--quick] [--out DIR] [--expert DIR] [--sections stage_latency,throughput,...]

Every figure in the JSON names the function and the code path it comes from; a figure that
cannot be measured here (no lip-sync expert, no clips, no backend) is ``null`` with the
reason, never estimated. Heavy imports (mediapipe, onnxruntime, matplotlib) happen inside the
sections, so importing this package is light.

Data flow, one module per step:

    config      BenchConfig (and the --quick preset): what to measure
    run         run_bench: records the host (machine) and the instruments (provenance), runs
                each selected section on a shared Context, writes bench.json,
                bench_samples.json, bench.md and the plots (report)
    sections    Context; stage_latency, throughput (rtdub.dub.dub_file on generated clips)
                and streaming (rtdub.measure.loopbench in a child process)
    quality     lookahead and quality: the docs/design.md §5 reconstruction of real clips, scored with
                MOC/LMD/... and the lip-sync expert's LSE
    clips       the generated talking-head clip and speech; the folder of real clips
                (``$RTDUB_MEDIA/clips`` or ``--clips``)
    machine     CPU, memory, load, packages, git commit
    provenance  the model bundle and the lip-sync expert (hashes, training record, status)
    report      bench.md tables and PNG plots, from the report dict alone

The command line (``add_bench_command``) lives in :mod:`rtdub.cli.measure`.
"""

from .config import BenchConfig
from .run import BenchOutput, run_bench

__all__ = ["BenchConfig", "BenchOutput", "run_bench"]
