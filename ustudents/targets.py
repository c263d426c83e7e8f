"""The distillation targets of teacher pretraining (docs/method.md §1): what Lk regresses.

    model = load_distillation_target(config, device)     # the ImageNet network P, or None
    PatchTargets(model, sampler, 64, xp)(patches)        # the paper's: P(patch resized to 64)
    TargetPool(targets, sampler, 4096, 4, 64, seed=0).draw(iteration, rng)   # the same, reused
    DenseTargets(model, images, p, 64, xp)(k, y0, x0, side, xp)   # the dense recipe's

Both are P's features, centred per feature and divided by one overall scale (their RMS spread),
measured once (on a first sample of patches, or over all the cached maps) and kept with a run,
so that λk means the same for Lite0 (K = 1280) and ResNet-18 (K = 512) and Lk starts near 1.
"""
import copy

import numpy as np

from .patches import resize_batch


def load_distillation_target(config, device=None, log=print):
    """The ImageNet network P for Lk, or None (with a message) when it cannot be had."""
    if config.distill == "none" or config.lambda_k == 0:
        return None
    from . import imagenet
    try:
        if config.distill == "lite0":
            return imagenet.load_efficientnet_lite0(device=device)
        return imagenet.load_resnet18(config.distill, device=device)
    except ImportError as err:
        log(f"# no distillation: {err}")
        log("# falling back to metric learning and compactness (lambda_m = 1 if it was 0)")
        return None


class PatchTargets:
    """P's pooled features of the anchors, centred and scaled with statistics of a first sample
    (or with `stats`, those of the run being continued: {"target_mean", "target_scale"})."""

    def __init__(self, model, sampler, size, xp, n_sample=256, stats=None, blocks=None):
        self.model, self.size, self.blocks, self.xp = model, size, blocks, xp
        if stats is None:
            feats = self._raw(xp.asarray(sampler.patches(n_sample)))  # (n_sample, K)
            self.mean = feats.mean(axis=0)                            # (K,)
            self.scale = float(xp.sqrt(feats.var(axis=0).mean()))     # RMS spread over features
        else:
            self.mean, self.scale = xp.asarray(stats["target_mean"]), float(stats["target_scale"])
        self.dim = self.mean.shape[0]

    def stats(self):
        return {"target_mean": self.mean, "target_scale": np.array(self.scale)}

    def _raw(self, patches):
        x = self.model.preprocess(resize_batch(patches, self.size))
        if self.blocks is None:
            return self.model.features(x)                             # (B, K)
        return self.model.feature_map(x, self.blocks).mean(axis=(2, 3))

    def __call__(self, patches):
        return (self._raw(patches) - self.mean) / self.scale         # (B, K)


class TargetPool:
    """The patch recipe's targets, each computed once and used `reuse` times on average.

    P's forward pass on a resized patch costs more than the teacher's own step at p = 17 and
    33. So the anchors come from a pool of `size` places with their targets: a generation of the
    pool serves span = size * reuse / batch iterations, each drawing its `batch` anchors from
    the pool at random (with replacement), and the next generation is a fresh pool. Every
    generation's places come from their own generator, seeded by (seed, generation), so the pool
    of any iteration can be rebuilt from the iteration alone: a continued run needs nothing
    saved. reuse = 1 is the paper's recipe (a fresh target for every anchor), without a pool.
    What departs from it: an anchor comes back about `reuse` times within its generation."""

    CHUNK = 512                          # patches per call of P while a pool is filled

    def __init__(self, targets, sampler, size, reuse, batch, seed=0, margin=0):
        self.targets, self.sampler, self.size, self.batch = targets, sampler, size, batch
        self.seed, self.margin = seed, margin
        self.span = max(1, round(size * reuse / batch))           # iterations per generation
        self.generation, self.places, self.values = None, None, None

    def fill(self, generation):
        """Draw generation `generation`'s places and compute their targets."""
        own = copy.copy(self.sampler)                     # same images, its own generator
        own.rng = np.random.default_rng([self.seed, 1, generation])
        places = own.places(self.size, margin=self.margin)
        xp = self.targets.xp
        self.values = xp.concatenate([
            self.targets(xp.asarray(own.patches_at(places.take(np.arange(i, min(i + self.CHUNK, self.size))))))
            for i in range(0, self.size, self.CHUNK)])           # (size, K)
        self.generation, self.places = generation, places

    def draw(self, iteration, rng):
        """(places, targets) of one iteration's `batch` anchors (iterations count from 1);
        rng draws which of the pool's anchors (the sampler's own, saved with a run)."""
        generation = (iteration - 1) // self.span
        if generation != self.generation:
            self.fill(generation)
        rows = rng.integers(self.size, size=self.batch)
        return self.places.take(rows), self.values[self.targets.xp.asarray(rows)]


class DenseTargets:
    """The dense recipe's distillation targets, computed once per image and kept on the device.

    The patch recipe's target is P(patch resized to size x size), globally pooled. Here each
    whole image is resized by size / p instead, so that a p x p patch spans size x size pixels
    as before, and P's feature map over it (the last one, or that after the first `blocks`
    blocks) is average-pooled over `pool` x `pool` cells (default: the cells such a patch
    covers, size / stride): one map per image. The target of the patch centred at a pixel is
    that map, bilinear between the cells, at the patch's centre; centred and scaled as
    PatchTargets does. P's cells see beyond the patch (their receptive field is larger than their
    stride), which the patch recipe's zero border hides; benchmarks/dense_targets.py measures
    how close the two targets are."""

    def __init__(self, model, images, p, size, xp, stats=None, pool=None, blocks=None):
        self.p, self.maps, self.scale_up = p, [], []
        for n, im in enumerate(images):
            if im.shape[1] != im.shape[2]:
                raise ValueError(f"recipe 'dense': image {n} is {im.shape[1]} x {im.shape[2]}; "
                                 f"the dense targets need square images (natural_images makes them)")
            side = max(size, round(im.shape[1] * size / p))
            x = model.preprocess(resize_batch(xp.asarray(im[None]), side))
            fmap = model.feature_map(x, blocks)[0]                    # (K, h, w)
            self.stride = 2 ** round(np.log2(side / fmap.shape[1]))  # input px per cell
            self.k = pool or max(1, size // self.stride)
            self.maps.append(_box_mean(fmap, self.k))                 # (K, h-k+1, w-k+1)
            self.scale_up.append(side / im.shape[1])
        if stats is None:
            flat = xp.concatenate([m.reshape(m.shape[0], -1) for m in self.maps], axis=1)
            self.mean = flat.mean(axis=1)                             # (K,)
            self.scale = float(xp.sqrt(flat.var(axis=1).mean()))
        else:
            self.mean, self.scale = xp.asarray(stats["target_mean"]), float(stats["target_scale"])
        self.dim = self.mean.shape[0]

    stats = PatchTargets.stats

    def _taps(self, n, first, count):
        """(count, h) bilinear weights along one axis of map n, for the patches whose first
        rows (or columns) are first .. first + count - 1 (host)."""
        h = self.maps[n].shape[1]
        centre = (first + np.arange(count) + self.p / 2) * self.scale_up[n]   # resized pixels
        u = np.clip(centre / self.stride - self.k / 2, 0, h - 1)     # in pooled cells
        i0 = np.floor(u).astype(int)
        i1, w1 = np.minimum(i0 + 1, h - 1), (u - i0).astype(np.float32)
        taps = np.zeros((count, h), np.float32)
        np.add.at(taps, (np.arange(count), i0), 1 - w1)
        np.add.at(taps, (np.arange(count), i1), w1)
        return taps

    def __call__(self, k, y0, x0, side, xp):
        """Targets of the side x side patches of crops at (y0, x0) of images k, in the rows of
        the dense descriptors (crop, row, column): (len(k) * side * side, K)."""
        H = max(self.maps[n].shape[1] for n in k)                  # taps padded to the largest map
        taps = np.zeros((2, len(k), side, H), np.float32)
        for i, (n, y, x) in enumerate(zip(k, y0, x0)):
            h = self.maps[n].shape[1]
            taps[0, i, :, :h], taps[1, i, :, :h] = self._taps(n, y, side), self._taps(n, x, side)
        taps = xp.asarray(taps)                                        # one copy per iteration
        out = []
        for i, n in enumerate(k):
            h = self.maps[n].shape[1]
            ay, ax = taps[0, i, :, :h], taps[1, i, :, :h]              # (side, h) each
            t = xp.matmul(xp.matmul(ay, self.maps[n]), ax.T)           # (K, side, side)
            out.append(t.transpose(1, 2, 0).reshape(side * side, -1))
        return (xp.concatenate(out) - self.mean) / self.scale


def _box_mean(fmap, k):
    """Mean over every k x k window of a (K, h, w) map -> (K, h-k+1, w-k+1)."""
    h, w = fmap.shape[1] - k + 1, fmap.shape[2] - k + 1
    return sum(fmap[:, i:i + h, j:j + w] for i in range(k) for j in range(k)) / (k * k)
