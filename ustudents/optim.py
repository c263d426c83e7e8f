"""Adam (Kingma & Ba, 2015) with bias correction, the same update as torch.optim.Adam.

For each parameter, with gradient g at step t (t = 1, 2, ...):

    g  <- g + weight_decay * p            (L2 penalty added to the gradient, as torch does)
    m  <- b1 m + (1 - b1) g
    v  <- b2 v + (1 - b2) g^2
    p  <- p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
"""
from .backend import fuse, get_array_module


@fuse
def _adam_update(p, g, m, v, weight_decay, b1, b2, c1, c2, lr, eps):
    """One Adam step of one parameter, in place on p, m and v (one GPU kernel)."""
    g = g + weight_decay * p
    m *= b1
    m += (1 - b1) * g
    v *= b2
    v += (1 - b2) * g * g
    p -= lr * (m / c1) / (get_array_module(v).sqrt(v / c2) + eps)


class Adam:
    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        if lr <= 0:
            raise ValueError(f"Adam: lr must be positive, got {lr}")
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"Adam: betas must lie in [0, 1), got {betas}")
        self.lr, self.betas, self.eps, self.weight_decay = lr, betas, eps, weight_decay
        self.t = 0
        self.m, self.v = {}, {}

    def step(self, params, grads):
        """Update every array in the dict `params` in place from the matching `grads` entry."""
        missing = set(params) - set(grads)
        if missing:
            raise ValueError(f"Adam.step: no gradient for {sorted(missing)}")
        self.t += 1
        b1, b2 = self.betas
        c1, c2 = 1 - b1 ** self.t, 1 - b2 ** self.t
        for name, p in params.items():
            g = grads[name]
            if g.shape != p.shape:
                raise ValueError(f"Adam.step: gradient for {name!r} has shape {tuple(g.shape)}, "
                                 f"parameter has {tuple(p.shape)}")
            if name not in self.m:
                xp = get_array_module(p)
                self.m[name], self.v[name] = xp.zeros_like(p), xp.zeros_like(p)
            _adam_update(p, g, self.m[name], self.v[name], self.weight_decay, b1, b2, c1, c2,
                         self.lr, self.eps)

    def state_dict(self):
        """Step count and moments, for saving a run to resume it."""
        return {"t": self.t, "m": dict(self.m), "v": dict(self.v)}
