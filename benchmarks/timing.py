"""What the benchmarks share: wall-clock times of a function (the device's queue drained) and
the JSON report."""
import json
import time

from ustudents.backend import synchronize
from ustudents.files import write_json


def _once(fn):
    """Seconds of one call of fn, the device's queue drained before and after."""
    synchronize()
    t = time.perf_counter()
    fn()
    synchronize()
    return time.perf_counter() - t


def run_times(fn, repeat):
    """Seconds of `repeat` calls of fn, after one warm-up call (allocations, threads, kernels)."""
    fn()
    return [_once(fn) for _ in range(repeat)]


def side_by_side(fns, repeat, pause=0.01):
    """Seconds of `repeat` calls of each of fns, taken in turn (one of each per round), so that
    a machine that slows down for a while slows all of them alike: a list of `repeat` times per
    fn. Each timed call follows an untimed one of the same fn, as in a training loop, and each
    such pair starts `pause` seconds after the last fn's work. PyTorch's OpenMP threads keep
    spinning on the cores for a few milliseconds after their work: on a 2-core AMD EPYC, p17
    conv1 of ours took 8.3 ms alone, 10.8 ms right after a PyTorch call, and 8.2 ms 5-10 ms
    after one, while PyTorch's own took 12.1, 11.9 and 11.5 ms. Longer pauses let idle cores
    sleep, and then the first calls of either are slow (9.6 ms after 30 ms)."""
    times = [[] for _ in fns]
    for _ in range(repeat):
        for fn, out in zip(fns, times):
            time.sleep(pause)
            fn()
            out.append(_once(fn))
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
