"""out += a @ b, in place: the one matrix product NumPy cannot write.

`numpy.matmul(a, b, out=c)` overwrites c. The convolution (conv.py) sums KH*KW products into
one output run, so with matmul each product goes to a temporary and is then added: one more
pass over the run per kernel offset, a third of the forward pass's time on the 5x5 layers. BLAS
itself computes C = alpha*A@B + beta*C, and with beta = 1 the sum happens inside the product's
own inner loop. This module calls that routine, `cblas_sgemm` / `cblas_dgemm`, in the very BLAS
library NumPy was built against, so it is the same code, threads and precision as matmul.

Where that library cannot be found (a NumPy built against another BLAS, or a CuPy array),
`addmul` falls back to matmul and an addition: the same result, one more pass.
`USTUDENTS_BLAS=numpy` forces the fallback.

The arrays are passed in place, as BLAS describes a matrix: a pointer, a leading dimension
(the stride between rows) and a flag for transposed. Any 2-d view whose one stride is the item
size and whose other stride is a whole number of items qualifies, which covers the runs and
transposed runs of conv.py. Anything else is multiplied through matmul.

`run_parallel` runs independent pieces of work on one thread per BLAS thread, with BLAS itself
held to one thread meanwhile; conv.py, fourier.py and imagenet.py split their work with it.
`interleave` runs independent sequences of steps (the students of a training run) over those
threads, a step at a time, and `shared` lets such sequences read one sequence of batches.
`holding` keeps BLAS on one thread through a whole computation (a training step, a dense pass):
OpenBLAS's own threads wait for more work by spinning for a while (about 0.1 s) after each
product they share, and a product on them between our pieces left them spinning on the very
cores the next pieces needed (a student step on 2 cores: 1.35x slower).

`holding` also asks glibc's malloc, once, to keep freed memory for reuse (`keep_freed_memory`).
By default every array above 32 MB is a fresh mmap, and the kernel zeroes each of its pages on
first touch: on the p = 65 teacher's 122 MB activations that page-faulting took more time than
the leaky ReLU and max pool themselves (a teacher step forward + backward: 1.39 s -> 0.81 s).
The process then keeps its peak memory instead of giving it back between steps.
`USTUDENTS_MALLOC=default` leaves malloc alone.
"""
import collections
import concurrent.futures
import ctypes
import functools
import glob
import itertools
import os
import threading

import numpy as np

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112
_cblas = None     # None: not looked for yet; False: not found; else {dtype or 'get'/'set': function}
_pool, _pool_size = None, 0    # the threads of run_parallel, made at first use
_local = threading.local()     # .inside: this thread is running one of run_parallel's pieces
_held = 0                      # inside `holding`: the cores to split over, BLAS on one thread


def _numpy_blas_files():
    """Shared libraries that NumPy's wheels ship their BLAS in, if any."""
    here = os.path.dirname(np.__file__)
    pattern = ("*openblas*.so*", "*openblas*.dylib", "*openblas*.dll")
    places = (os.path.join(here, "..", "numpy.libs"), os.path.join(here, ".dylibs"), here)
    return [f for d in places for p in pattern for f in glob.glob(os.path.join(d, p))]


def _find_cblas():
    """{np.float32: sgemm, np.float64: dgemm, "get": get_num_threads, "set": set_num_threads}
    as ctypes functions, or False."""
    if os.environ.get("USTUDENTS_BLAS", "").lower() == "numpy":
        return False
    for path in _numpy_blas_files():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        # scipy-openblas64 (NumPy's wheels) names them scipy_cblas_sgemm64_, 64-bit integers
        for prefix, suffix, integer in (("scipy_", "64_", ctypes.c_int64), ("", "64_", ctypes.c_int64),
                                        ("scipy_", "", ctypes.c_int32), ("", "", ctypes.c_int32)):
            names = {np.float32: "cblas_sgemm", np.float64: "cblas_dgemm",
                     "get": "openblas_get_num_threads", "set": "openblas_set_num_threads"}
            found = {key: getattr(lib, prefix + name + suffix, None) for key, name in names.items()}
            if None in found.values():
                continue
            for dtype, real in ((np.float32, ctypes.c_float), (np.float64, ctypes.c_double)):
                found[dtype].argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, integer, integer, integer,
                                         real, ctypes.c_void_p, integer, ctypes.c_void_p, integer, real,
                                         ctypes.c_void_p, integer]
                found[dtype].restype = None
            found["get"].argtypes, found["get"].restype = [], ctypes.c_int
            found["set"].argtypes, found["set"].restype = [ctypes.c_int], None
            return found
    return False


def have_cblas():
    """True when addmul multiplies in place through BLAS (not matmul and an addition)."""
    global _cblas
    if _cblas is None:
        _cblas = _find_cblas()
    return bool(_cblas)


def threads():
    """The threads to split work over here: 1 inside a piece of run_parallel, else the threads
    BLAS would run a product on (OPENBLAS_NUM_THREADS or all cores); 1 if unknown."""
    if getattr(_local, "inside", False):
        return 1
    if _held:
        return _held
    return max(1, _cblas["get"]()) if have_cblas() else 1


_kept = False


def keep_freed_memory():
    """Ask glibc's malloc to serve big arrays from a heap it never trims (M_MMAP_THRESHOLD,
    M_TRIM_THRESHOLD at 1 GiB), so that freed memory is reused rather than unmapped and faulted
    in again. Once per process; False where it does nothing (not glibc, or
    USTUDENTS_MALLOC=default)."""
    global _kept
    if _kept or os.environ.get("USTUDENTS_MALLOC", "").lower() == "default":
        return _kept
    _kept = None
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
    _kept = bool(mallopt(_M_MMAP_THRESHOLD, 2 ** 30)) and bool(mallopt(_M_TRIM_THRESHOLD, 2 ** 30))
    return _kept


def holding(fn):
    """Decorator: fn runs with BLAS held to one thread, while threads() still gives the cores
    that run_parallel splits over. Nested calls hold once; a no-op on one core or without
    NumPy's BLAS."""
    @functools.wraps(fn)
    def held(*args, **kwargs):
        global _held
        keep_freed_memory()
        n = threads()
        if _held or n <= 1 or getattr(_local, "inside", False):
            return fn(*args, **kwargs)
        before = _cblas["get"]()
        _cblas["set"](1)
        _held = n
        try:
            return fn(*args, **kwargs)
        finally:
            _held = 0
            _cblas["set"](before)               # as it was, whatever threads() was told
    return held


def _piece(task):
    _local.inside = True
    try:
        return task()
    finally:
        _local.inside = False


def run_parallel(tasks, n=None):
    """Run the callables `tasks`, on up to n (default threads()) Python threads at once, and
    return their results in order.

    A convolution's products are too small for OpenBLAS to split well over cores (each is
    0.1-1 ms): two threads make a product barely faster than one. So the convolution splits its
    work itself, into independent pieces (blocks of output rows; dW and dX), and runs one piece
    per core, with BLAS held to one thread meanwhile. ctypes releases Python's lock during the
    product, so the pieces run at the same time. The result is the same as one after another:
    every sum is added in the same order."""
    n = min(threads() if n is None else n, len(tasks))
    if n <= 1 or not have_cblas() or getattr(_local, "inside", False):
        return [task() for task in tasks]
    global _pool, _pool_size
    if _pool_size < n:
        _pool = concurrent.futures.ThreadPoolExecutor(n, thread_name_prefix="ustudents-blas")
        _pool_size = n
    return holding(lambda: [future.result() for future in [_pool.submit(_piece, task) for task in tasks]])()


def interleave(jobs, n=None):
    """Run the iterators `jobs` to their end, one step (one next()) at a time, on up to n
    threads (default threads()). Each thread takes the job that has waited longest, runs one of
    its steps and puts it back, so M jobs share n cores evenly however M and n divide (3 students
    on 2 cores: each core runs one and a half students' steps), and each job's steps run in
    order, one at a time. With one thread: round-robin, a step of job 0, of job 1, ...

    Why: a student step on a 64 x 64 crop is too small for its convolutions to gain from two
    cores (the pieces of run_parallel barely overlap), but three students are independent work.
    With n > 1 each step runs on one thread (threads() is 1 inside it), so the results are one
    core's, whatever n; with n = 1 the steps run on the calling thread and split as it would.

    An error in one job stops the others after their current step and is raised here; so does
    an interrupt of the calling thread."""
    queue, lock, stop = collections.deque(jobs), threading.Lock(), threading.Event()

    def worker():
        while not stop.is_set():
            with lock:
                if not queue:               # the jobs left are on other threads: they finish them
                    return
                job = queue.popleft()
            try:
                next(job)
            except StopIteration:
                continue
            except BaseException:
                stop.set()
                raise
            with lock:
                queue.append(job)

    n = min(threads() if n is None else n, len(queue))
    try:
        run_parallel([worker] * max(n, 1), n)
    finally:
        stop.set()


_END = object()


def shared(iterable, n):
    """n iterators over the items of `iterable`, each item made once, that interleave's threads
    may advance at once (itertools.tee behind a lock). An item is freed when all n have read it,
    so memory holds only the items between the slowest reader and the fastest."""
    lock = threading.Lock()

    def reader(copy):
        while True:
            with lock:
                item = next(copy, _END)
            if item is _END:
                return
            yield item
    return [reader(copy) for copy in itertools.tee(iter(iterable), n)]


def in_pieces(count, n, work):
    """work(lo, hi) on n (or fewer) runs lo..hi of range(count), as even as can be, at once
    (run_parallel). The convolutions' layout changes (NCHW to their own layouts and back) go
    this way too: passes over memory that one core alone does not saturate."""
    n = max(1, min(n, count))
    run_parallel([functools.partial(work, count * i // n, count * (i + 1) // n) for i in range(n)], n)


def _layout(a):
    """(transpose flag, leading dimension) of a 2-d array as BLAS reads it, or None."""
    item, (rows, cols), (s0, s1) = a.itemsize, a.shape, a.strides
    if rows == 1:
        s0 = cols * item                 # a stride over one row is never used: any will do
    if cols == 1:
        s1 = rows * item
    if s1 == item and s0 % item == 0 and s0 // item >= max(1, cols):
        return _NO_TRANS, s0 // item
    if s0 == item and s1 % item == 0 and s1 // item >= max(1, rows):
        return _TRANS, s1 // item
    return None


def addmul(a, b, out, overwrite=False):
    """out += a @ b in place (overwrite=True: out = a @ b); a (M, K), b (K, N), out (M, N).

    out must not overlap a or b."""
    (M, K), (Kb, N) = a.shape, b.shape
    if Kb != K or out.shape != (M, N):
        raise ValueError(f"addmul: a {a.shape} @ b {b.shape} does not fit out {out.shape}")
    arrays = (a, b, out)
    if have_cblas() and all(isinstance(m, np.ndarray) and m.flags.aligned for m in arrays) \
            and out.dtype.type in _cblas and out.dtype.isnative and a.dtype == b.dtype == out.dtype \
            and out.size:
        la, lb, lc = _layout(a), _layout(b), _layout(out)
        if la and lb and lc and lc[0] == _NO_TRANS:
            if K == 0:                   # BLAS would leave out untouched; a @ b is all zeros
                if overwrite:
                    out.fill(0)
                return out
            _cblas[out.dtype.type](_ROW_MAJOR, la[0], lb[0], M, N, K, 1.0,
                                   a.ctypes.data, la[1], b.ctypes.data, lb[1], 0.0 if overwrite else 1.0,
                                   out.ctypes.data, lc[1])
            return out
    if overwrite:
        from .backend import get_array_module
        return get_array_module(out).matmul(a, b, out=out)
    out += a @ b
    return out
