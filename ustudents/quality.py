"""How good is a teacher? Two measures that need no students.

1. Patch retrieval: for a query patch, is its augmented version (shifted a few pixels, noisy)
   nearer in descriptor space than every one of N other patches? The share of queries where it
   is. Chance level is 1 / (N + 1); an untrained network already does well on easy pairs.
2. Nearest-neighbour anomaly proxy: describe every pixel of the anomaly-free training images
   densely, then score each test pixel by the distance of its descriptor to the nearest training
   descriptor, and compute AU-PRO. It is what students could at best learn from this teacher:
   pixels unlike anything normal stand out only if the descriptors tell them apart.
"""
import numpy as np

from .backend import asnumpy, get_array_module
from .dense import dense_features
from .metrics import au_pro
from .natural import PatchSampler


def _descriptors(net, patches, batch=256):
    """Descriptors of host patches (N, 3, p, p) -> device array (N, d)."""
    xp = get_array_module(*net.params.values())
    out = [net.forward(xp.asarray(patches[i:i + batch]))[0] for i in range(0, len(patches), batch)]
    return xp.concatenate(out).reshape(len(patches), -1)


def _sq_dists(a, b):
    """Squared Euclidean distances between rows: a (n, d), b (m, d) -> (n, m)."""
    return (a * a).sum(1)[:, None] - 2 * a @ b.T + (b * b).sum(1)[None, :]


def retrieval_accuracy(net, images, n_queries=256, n_negatives=255, shift=4, noise=0.02, seed=0):
    """Share of queries whose positive is nearer than all n_negatives candidates.

    images: held-out natural images (N, 3, H, W), N >= 2. The candidates are the negatives that
    PatchSampler.triplet draws (each from an image other than its own anchor's), shared by all
    queries. Returns a float in [0, 1]."""
    sampler = PatchSampler(images, net.p, seed=seed)
    anchors, positives, _ = sampler.triplet(n_queries, shift=shift, noise=noise)
    negatives = sampler.triplet(n_negatives, shift=shift, noise=noise)[2]
    a, p, n = (_descriptors(net, x) for x in (anchors, positives, negatives))
    d_pos = ((a - p) ** 2).sum(1)                                   # (Q,)
    d_neg = _sq_dists(a, n).min(1)                                  # (Q,)
    return float(asnumpy((d_pos < d_neg).mean()))


def nearest_neighbour_maps(net, train_images, test_images, n_reference=8192, seed=0, chunk=4096):
    """Per-pixel distance to the nearest training descriptor: (N, H, W) host float32 maps.

    train_images, test_images: (N, 3, H, W) on the net's device. n_reference training pixels,
    drawn at random, stand for the normal descriptors (all of them cost too much memory)."""
    xp = get_array_module(*net.params.values())
    ref = dense_features(net, xp.asarray(train_images))             # (Nt, d, H, W)
    ref = ref.transpose(0, 2, 3, 1).reshape(-1, ref.shape[1])      # (Nt*H*W, d)
    pick = np.random.default_rng(seed).choice(len(ref), min(n_reference, len(ref)), replace=False)
    ref = ref[xp.asarray(pick)]
    maps = []
    for image in test_images:
        f = dense_features(net, xp.asarray(image[None]))[0]        # (d, H, W)
        d, H, W = f.shape
        q = f.reshape(d, -1).T                                      # (H*W, d)
        best = xp.concatenate([_sq_dists(q[i:i + chunk], ref).min(1) for i in range(0, len(q), chunk)])
        maps.append(asnumpy(xp.sqrt(xp.maximum(best, 0))).reshape(H, W).astype(np.float32))
    return np.stack(maps)


def nearest_neighbour_au_pro(net, train_images, test_images, test_masks, limit=0.3, **kwargs):
    """AU-PRO (up to FPR `limit`) of the nearest-neighbour anomaly proxy on one category."""
    return au_pro(nearest_neighbour_maps(net, train_images, test_images, **kwargs), test_masks, limit)


def nn_proxy_per_category(net, root, categories=None, size=64, **kwargs):
    """The nearest-neighbour proxy's AU-PRO for each category of an MVTec-layout folder
    (e.g. the synthetic data), images resized to size x size. Returns {category: AU-PRO}."""
    from .data import list_categories, load_category, load_images, load_test
    scores = {}
    for name in categories or list_categories(root):
        category = load_category(root, name)
        test = load_test(category.test, size)
        scores[name] = nearest_neighbour_au_pro(net, load_images(category.train, size), test.images,
                                                test.masks, **kwargs)
    return scores
