"""cupy.cuda of the strict stand-in: one device, its properties, errors and a memory pool."""
import types


class _CUDARuntimeError(RuntimeError):
    pass


_CUDARuntimeError.__name__ = "CUDARuntimeError"


class _OutOfMemoryError(MemoryError):
    """As cupy.cuda.memory.OutOfMemoryError: 'Out of memory allocating N bytes (allocated so far: M bytes).'"""

    def __init__(self, size, total):
        super().__init__(f"Out of memory allocating {size:,} bytes (allocated so far: {total:,} bytes).")


_OutOfMemoryError.__name__ = "OutOfMemoryError"

runtime = types.SimpleNamespace(
    CUDARuntimeError=_CUDARuntimeError,
    getDeviceCount=lambda: 1,
    getDeviceProperties=lambda i: {"name": b"strict CuPy stand-in (NumPy)", "totalGlobalMem": 2 ** 34,
                                   "major": 9, "minor": 0},
    runtimeGetVersion=lambda: 12090,
    driverGetVersion=lambda: 12090,
    memGetInfo=lambda: (2 ** 34, 2 ** 34),
)
memory = types.SimpleNamespace(OutOfMemoryError=_OutOfMemoryError)


class Device:
    def __init__(self, device=0):
        self.id = int(device)

    def synchronize(self):
        pass

    def use(self):
        return self

    compute_capability = "90"
    mem_info = property(lambda self: runtime.memGetInfo())


class Event:
    def record(self, stream=None):
        pass

    def synchronize(self):
        pass


def get_elapsed_time(start, end):
    return 0.0
