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


class Steal:
    """The share of CPU time the hypervisor gave to other guests while the block ran ("steal"
    in /proc/stat; None where there is none to read). On a shared virtual machine a run with
    much steal is a noisy run: compare ratios of side-by-side runs only, and rerun."""

    def __init__(self):
        self.share = None

    @staticmethod
    def _read():
        try:
            with open("/proc/stat") as f:
                values = [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        return values[7] if len(values) > 7 else None, sum(values)

    def __enter__(self):
        self._start = self._read()
        return self

    def __exit__(self, *exc):
        end = self._read()
        if self._start and end and self._start[0] is not None and end[1] > self._start[1]:
            self.share = (end[0] - self._start[0]) / (end[1] - self._start[1])
        return False


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
