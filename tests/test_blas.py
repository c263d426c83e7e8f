"""blas.addmul (out += a @ b inside BLAS) and blas.run_parallel: the same numbers as NumPy's
matmul, in place, on the strided views the convolution passes, and a fallback that agrees."""
import threading

import numpy as np
import pytest

from ustudents import blas
from ustudents.gradcheck import rel_error


def views(rng, dtype, M, K, N):
    """a (M,K), b (K,N), out (M,N) as views into bigger arrays: rows further apart than their
    length, and a and b transposed (column-major), as conv.py's runs and run.T are."""
    big = rng.standard_normal((3 * M + 3 * K + 7, 3 * K + 3 * N + 5)).astype(dtype)
    a = big[:M, 2:2 + K]                                   # row stride > K
    b = big[M + 1:M + 1 + N, 3:3 + K].T                    # transposed: column stride > N
    out = rng.standard_normal((M, 2 * N + 3)).astype(dtype)[:, 1:1 + N]
    return a, b, out


need_cblas = pytest.mark.skipif(not blas.have_cblas(), reason="NumPy's BLAS library was not found")


@need_cblas
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("overwrite", [False, True])
def test_addmul_through_blas_equals_matmul_on_strided_and_transposed_views(dtype, overwrite, rng):
    a, b, out = views(rng, dtype, 7, 5, 6)
    expected = a @ b + (0 if overwrite else out)
    before = out.base.copy()
    assert blas.addmul(a, b, out, overwrite=overwrite) is out
    tolerance = 1e-5 if dtype == np.float32 else 1e-13
    assert rel_error(out, expected) < tolerance
    untouched = np.ones(before.shape, bool)
    untouched[:, 1:1 + out.shape[1]] = False            # what lies beside the view stays as it was
    np.testing.assert_array_equal(out.base[untouched], before[untouched])


@need_cblas
def test_addmul_overwrite_never_reads_the_old_output(rng):
    a, b, out = views(rng, np.float64, 4, 3, 5)
    out[...] = np.nan
    blas.addmul(a, b, out, overwrite=True)
    assert rel_error(out, a @ b) < 1e-13


def test_the_matmul_fallback_gives_the_same_result(rng, monkeypatch):
    a, b, out = views(rng, np.float64, 6, 4, 3)
    via_blas = blas.addmul(a, b, out.copy())
    monkeypatch.setattr(blas, "_cblas", False)             # as with USTUDENTS_BLAS=numpy
    assert not blas.have_cblas() and blas.threads() == 1
    via_numpy = blas.addmul(a, b, out.copy())
    assert rel_error(via_numpy, out + a @ b) < 1e-13 and rel_error(via_blas, via_numpy) < 1e-13


def test_addmul_multiplies_byte_swapped_arrays_correctly(rng):
    a, b = rng.standard_normal((3, 4)).astype(">f4"), rng.standard_normal((4, 2)).astype(">f4")
    out = np.ones((3, 2), dtype=">f4")
    blas.addmul(a, b, out)
    assert rel_error(out.astype(np.float64), 1 + a.astype(np.float64) @ b.astype(np.float64)) < 1e-5


def test_addmul_names_shapes_that_do_not_fit():
    with pytest.raises(ValueError, match=r"\(2, 3\) @ b \(4, 5\)"):
        blas.addmul(np.zeros((2, 3)), np.zeros((4, 5)), np.zeros((2, 5)))
    with pytest.raises(ValueError, match=r"out \(3, 5\)"):
        blas.addmul(np.zeros((2, 4)), np.zeros((4, 5)), np.zeros((3, 5)))


def test_addmul_with_nothing_to_sum_adds_nothing_or_writes_zeros():
    out = np.ones((2, 3))
    blas.addmul(np.zeros((2, 0)), np.zeros((0, 3)), out)
    np.testing.assert_array_equal(out, 1)
    blas.addmul(np.zeros((2, 0)), np.zeros((0, 3)), out, overwrite=True)
    np.testing.assert_array_equal(out, 0)


def test_run_parallel_returns_every_result_in_order():
    assert blas.run_parallel([lambda i=i: i * i for i in range(5)], n=3) == [0, 1, 4, 9, 16]


@need_cblas
def test_run_parallel_holds_blas_to_one_thread_and_gives_the_setting_back():
    before = blas.threads()
    seen = blas.run_parallel([blas.threads, blas.threads], n=2)
    assert seen == [1, 1] and blas.threads() == before


@pytest.mark.parametrize("n", [1, 2, 3])
def test_interleave_runs_every_step_of_every_job_in_its_order(n):
    done, lock = [], threading.Lock()

    def job(name, steps):
        for k in range(steps):
            with lock:
                done.append((name, k))
            yield
    blas.interleave([job(name, steps) for name, steps in zip("abc", (4, 1, 3))], n)
    for name, steps in zip("abc", (4, 1, 3)):
        assert [k for who, k in done if who == name] == list(range(steps))
    if n == 1:                                               # round-robin, one step each
        assert done[:3] == [("a", 0), ("b", 0), ("c", 0)] and done[3:5] == [("a", 1), ("c", 1)]


def test_interleave_stops_the_other_jobs_and_raises_a_jobs_error():
    steps = []

    def good():
        for k in range(1000):
            steps.append(k)
            yield

    def bad():
        yield
        raise RuntimeError("student 2 diverged")
    with pytest.raises(RuntimeError, match="student 2 diverged"):
        blas.interleave([good(), bad()], 2)
    assert len(steps) < 1000                                 # the good job did not run on


def test_shared_readers_each_see_every_item_made_once():
    made = []

    def items():
        for k in range(5):
            made.append(k)
            yield k * k
    readers = blas.shared(items(), 3)
    seen = {i: [] for i in range(3)}

    def job(i):
        for item in readers[i]:
            seen[i].append(item)
            yield
    blas.interleave([job(i) for i in range(3)], 2)
    assert made == list(range(5)) and all(v == [0, 1, 4, 9, 16] for v in seen.values())


@need_cblas
def test_holding_keeps_blas_on_one_thread_and_still_splits_over_the_cores():
    before = blas.threads()
    seen = {}

    @blas.holding
    def inner():
        seen["inner"] = (blas._cblas["get"](), blas.threads())

    @blas.holding
    def outer():
        seen["outer"] = (blas._cblas["get"](), blas.threads())
        inner()                                              # nested: held once
        seen["pieces"] = blas.run_parallel([blas.threads] * 2)
        seen["after inner"] = blas._cblas["get"]()
    outer()
    if before > 1:
        assert seen["outer"] == seen["inner"] == (1, before) and seen["after inner"] == 1
    assert seen["pieces"] == [1, 1]                          # a piece splits no further
    assert blas.threads() == before and blas._cblas["get"]() == before


@pytest.mark.parametrize("shape", [(3, 40, 9, 8, 6, 3, 1), (2, 5, 20, 22, 4, 5, 1), (5, 33, 6, 6, 8, 3, 1),
                                   (5, 33, 9, 8, 8, 1, 0)])         # the last: a 1x1 kernel
def test_the_conv_split_over_threads_equals_one_thread_to_the_bit(shape, rng, monkeypatch):
    import ustudents.columns as columns
    import ustudents.conv as conv
    N, C, H, W, F, K, pad = shape
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = rng.standard_normal((F, C, K, K)).astype(np.float32)
    b = rng.standard_normal(F).astype(np.float32)
    results = []
    monkeypatch.setattr(conv, "FOURIER", False)                # the direct convolution's split
    for n in (1, 3):
        monkeypatch.setattr(conv, "threads", lambda n=n: n)
        monkeypatch.setattr(columns, "threads", lambda n=n: n)
        monkeypatch.setitem(conv.BLOCK, "cpu", 200)            # several blocks to split
        monkeypatch.setattr(columns, "BLOCK", 2000)
        y, cache = conv.conv2d_forward(x, w, b, pad=pad)
        results.append([y, *conv.conv2d_backward(np.cos(y), cache)])
        pieces = columns.Pieces(x, w, 1, pad).pieces if C < conv.IN_PLACE_MIN_C else conv._Plan(x, w, pad).blocks
        assert n == 1 or K == 1 or len(pieces) >= 3
    for one, split in zip(*results):
        np.testing.assert_array_equal(split, one)


def test_ustudents_blas_numpy_turns_the_blas_route_off(monkeypatch):
    monkeypatch.setenv("USTUDENTS_BLAS", "numpy")
    assert blas._find_cblas() is False
    monkeypatch.delenv("USTUDENTS_BLAS")
    assert blas._find_cblas() is not False or not blas._numpy_blas_files()


@pytest.mark.skipif(not blas.have_cblas(), reason="needs NumPy's OpenBLAS")
def test_holding_gives_blas_back_the_threads_it_had(monkeypatch):
    """After a held call BLAS runs on as many threads as before it, even where threads() says
    another count (a test that pretends to more cores): OpenBLAS's rounding can depend on it."""
    before = blas._cblas["get"]()
    monkeypatch.setattr(blas, "threads", lambda: before + 2)
    inside = blas.holding(lambda: blas._cblas["get"]())()
    assert inside == 1 and blas._cblas["get"]() == before
