"""Mean and variance of a stream of batches, without stacking them (docs/method.md §4).

The students' targets are normalised with the mean and std of each teacher channel over every
pixel of every training image, and the anomaly scores with the mean and std of e and v over every
validation pixel (docs/method.md §5): far more values than fit in memory at once. Batches come
one at a time, and their moments merge exactly:

    acc = RunningMoments()
    for y in batches:                       # y (n, D, H, W)
        acc.update(y, axis=(0, 2, 3))       # per channel: acc.mean, acc.var, acc.std (D,)
"""
from .backend import get_array_module


class RunningMoments:
    """Mean and population variance of a stream of batches, merged exactly (Chan et al., 1979).

    update(x, axis) folds the values of x, reduced over `axis` (None: all), into float64
    accumulators: the count n, the mean m and M2 = Σ (x − m)². Parts A and B merge as

        δ = m_B − m_A,   m = m_A + δ·n_B/n,   M2 = M2_A + M2_B + δ²·n_A·n_B/n     (n = n_A + n_B)

    Unlike running sums of x and x², this keeps the variance when |mean| >> std.
    """

    def __init__(self):
        self.n, self.mean, self.m2 = 0, None, None

    def update(self, x, axis=None):
        xp = get_array_module(x)
        x = x.astype(xp.float64)
        mean_b = x.mean(axis=axis, keepdims=True)
        m2_b = ((x - mean_b) ** 2).sum(axis=axis)
        mean_b = mean_b.reshape(m2_b.shape)
        n_b = x.size // max(m2_b.size, 1)
        if n_b == 0:
            return self
        if self.n == 0:
            self.n, self.mean, self.m2 = n_b, mean_b, m2_b
            return self
        n = self.n + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / n)
        self.m2 = self.m2 + m2_b + delta * delta * (self.n * n_b / n)
        self.n = n
        return self

    @property
    def var(self):
        if self.n == 0:
            raise ValueError("RunningMoments: no values seen yet")
        return self.m2 / self.n

    @property
    def std(self):
        return get_array_module(self.var).sqrt(self.var)
