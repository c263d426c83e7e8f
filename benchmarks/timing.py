"""What the benchmarks share: wall-clock times of a function (the device's queue drained) and
the JSON report."""
import json
import time

from ustudents.backend import synchronize
from ustudents.files import write_json


def run_times(fn, repeat):
    """Seconds of `repeat` calls of fn, after one warm-up call (allocations, threads, kernels)."""
    fn()
    times = []
    for _ in range(repeat):
        synchronize()
        t = time.perf_counter()
        fn()
        synchronize()
        times.append(time.perf_counter() - t)
    return times


def report(result, path=None):
    """Print the result as one JSON line; with a path, also write it there (atomically)."""
    print(json.dumps(result))
    if path:
        write_json(path, result)


def torch_for(device):
    """PyTorch, when it is installed and can run on `device` ('cpu' | 'cuda'), else None: the
    benchmarks then time ours alone. PyTorch is no dependency of ustudents."""
    try:
        import torch
    except ImportError:
        return None
    return torch if device == "cpu" or torch.cuda.is_available() else None
