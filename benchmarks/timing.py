"""What the benchmarks share: wall-clock times of a function, the device's queue drained."""
import time

from ustudents.backend import synchronize


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
