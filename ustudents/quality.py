"""How good is a teacher? Three measures that need no students.

1. Patch retrieval: for a query patch, is its positive (the paper's augmented copy, paper §3.1:
   the window shifted by up to ±4 px, plus Gaussian noise) nearer in descriptor space than every
   one of 399 other patches? The share of queries where it is. Chance level is 1 / 400; an
   untrained network already does well on easy pairs.
2. Explained variance of the distillation target: how much of what teacher pretraining regresses
   (the ImageNet network's pooled features of the patch, docs/method.md §1) a linear decoder on
   the teacher's descriptors recovers on held-out patches. Measured with a decoder fitted afresh,
   so it applies to any network (untrained, metric-only, distilled) alike.
3. Nearest-neighbour anomaly proxy: describe every pixel of the anomaly-free training images
   densely, then score each test pixel by the distance of its descriptor to the nearest training
   descriptor, and compute AU-PRO. It is what students could at best learn from this teacher:
   pixels unlike anything normal stand out only if the descriptors tell them apart.
"""
import numpy as np

from .backend import asnumpy, get_array_module
from .dense import dense_features
from .metrics import au_pro
from .patches import PatchSampler, resize_batch


def _descriptors(net, patches, batch=256):
    """Descriptors of host patches (N, 3, p, p) -> device array (N, d)."""
    xp = get_array_module(*net.params.values())
    out = [net.forward(xp.asarray(patches[i:i + batch]))[0] for i in range(0, len(patches), batch)]
    return xp.concatenate(out).reshape(len(patches), -1)


def _sq_dists(a, b):
    """Squared Euclidean distances between rows: a (n, d), b (m, d) -> (n, m)."""
    return (a * a).sum(1)[:, None] - 2 * a @ b.T + (b * b).sum(1)[None, :]


def _retrieval_patches(sampler, n_queries, n_pool, shift, noise):
    """Anchors and positives (Q, 3, p, p), a pool of candidate negatives (M, 3, p, p), and
    overlap (Q, M) bool: True where a pool patch shares a pixel with the query's anchor."""
    N, p, rng = len(sampler.images), sampler.p, sampler.rng
    k = rng.integers(N, size=n_queries)
    y, x, my, mx = sampler._corners(k, shift)                    # anchors, room to move by shift
    anchors = sampler._crops(k, y, x)
    positives = sampler._crops(k, y + rng.integers(-my, my + 1), x + rng.integers(-mx, mx + 1))
    if noise > 0:
        positives += np.float32(noise) * rng.standard_normal(positives.shape, dtype=np.float32)
    np.clip(positives, 0, 1, out=positives)
    j = rng.integers(N, size=n_pool)
    yj, xj, _, _ = sampler._corners(j)
    overlap = ((k[:, None] == j[None]) & (np.abs(y[:, None] - yj[None]) < p)
               & (np.abs(x[:, None] - xj[None]) < p))
    return anchors, positives, sampler._crops(j, yj, xj), overlap


def retrieval_accuracy(net, images, n_queries=256, n_negatives=399, shift=4, noise=0.03, seed=0):
    """Share of queries whose positive is nearer than all of its n_negatives negatives.

    images: held-out natural images (N, 3, H, W) or a list of (3, H_i, W_i), N >= 2. Each query
    is a random p x p anchor; its positive is the anchor's window moved by up to ±shift px on
    each axis, plus Gaussian noise of std `noise` per pixel (clipped to [0, 1]), with no
    brightness or contrast change (as pretraining's positives, docs/method.md §1). Its
    negatives are the first n_negatives patches of a shared random pool (2 * n_negatives
    patches of the same images) that share no pixel with the anchor: n_negatives + 1 candidates,
    400 by default, so chance level is 1 / 400. A query counts when its positive is strictly
    nearer (squared Euclidean distance of the descriptors) than its nearest negative.
    Returns a float in [0, 1]."""
    hits, _ = _retrieval_hits(net, images, n_queries, n_negatives, shift, noise, seed)
    return float(hits.mean())


def retrieval_by_contrast(net, images, groups=4, n_queries=256, n_negatives=399, shift=4,
                          noise=0.03, seed=0):
    """retrieval_accuracy's queries (the same ones, for the same arguments) split into `groups`
    equal groups by their anchor's contrast (the std of its pixels), lowest first: a list of
    (lowest contrast, highest contrast, share retrieved) per group. In a nearly flat patch the
    positive's noise can outweigh what tells it from other flat patches, so the lowest group
    asks a different thing of a descriptor than the highest: that it keep the patch's colour,
    not its structure (docs/teachers.md measures both)."""
    hits, contrast = _retrieval_hits(net, images, n_queries, n_negatives, shift, noise, seed)
    order = np.argsort(contrast, kind="stable")
    return [(float(contrast[g[0]]), float(contrast[g[-1]]), float(hits[g].mean()))
            for g in np.array_split(order, groups)]


def colour_sensitivity(net, images, step=0.05, noise=0.03, flat=0.25, n_patches=256, seed=0):
    """How far a uniform change of colour moves a flat patch's descriptor, against how far the
    retrieval positive's noise moves it: the median over the flattest `flat` share of n_patches
    random patches (by the std of their pixels) of |f(x + c) - f(x)| / |f(x + e) - f(x)|, where
    c adds ±step to each channel (a random sign per channel and patch) and e is Gaussian noise
    of std `noise` per pixel, both clipped to [0, 1]. Above 1 a descriptor tells such a colour
    change from noise; near 0 it keeps the patch's structure and discards its colour."""
    patches = PatchSampler(images, net.p, seed=seed).patches(n_patches)
    x0 = patches[np.argsort(_contrast(patches), kind="stable")[:max(1, round(flat * n_patches))]]
    rng = np.random.default_rng(seed)
    signs = rng.choice(np.float32([-1, 1]), size=(len(x0), x0.shape[1], 1, 1))
    coloured = np.clip(x0 + np.float32(step) * signs, 0, 1)
    noisy = np.clip(x0 + np.float32(noise) * rng.standard_normal(x0.shape, dtype=np.float32), 0, 1)
    f0, fc, fn = (asnumpy(_descriptors(net, v)).astype(np.float64) for v in (x0, coloured, noisy))
    return float(np.median(np.linalg.norm(fc - f0, axis=1) / np.linalg.norm(fn - f0, axis=1)))


def _retrieval_hits(net, images, n_queries, n_negatives, shift, noise, seed):
    """retrieval_accuracy's work: per query, whether its positive was retrieved (Q,) bool, and
    its anchor's contrast (Q,), both on the host."""
    sampler = PatchSampler(images, net.p, seed=seed)
    anchors, positives, pool, overlap = _retrieval_patches(sampler, n_queries, 2 * n_negatives,
                                                           shift, noise)
    usable = ~overlap & (np.cumsum(~overlap, axis=1) <= n_negatives)          # (Q, M)
    if (usable.sum(1) < n_negatives).any():
        raise ValueError(f"retrieval_accuracy: images {[im.shape for im in sampler.images]} are "
                         f"too few or too small for {n_negatives} negatives of {net.p} px that "
                         f"share no pixel with the anchor")
    a, p, n = (_descriptors(net, x) for x in (anchors, positives, pool))
    xp = get_array_module(a)
    a, p, n = (v.astype(xp.float64) for v in (a, p, n))                    # no float32 ties
    d_pos = ((a - p) ** 2).sum(1)                                             # (Q,)
    d_neg = xp.where(xp.asarray(usable), _sq_dists(a, n), xp.inf).min(1)     # (Q,)
    return asnumpy(d_pos < d_neg), _contrast(anchors)


def _contrast(patches):
    """Each host patch's contrast: the std of its pixels, (N,)."""
    return patches.reshape(len(patches), -1).std(1)


def _distillation_targets(target_model, patches, xp, size=64, batch=256):
    """What teacher pretraining regresses, for host patches (N, 3, p, p): the target network's
    pooled features of each patch resized to size x size (teacher.py's targets before their
    centring and scaling) -> (N, K) on xp's device, which must be target_model's."""
    out = []
    for i in range(0, len(patches), batch):
        x = resize_batch(xp.asarray(patches[i:i + batch]), size)
        out.append(target_model.features(target_model.preprocess(x)).reshape(len(x), -1))
    return xp.concatenate(out)


RIDGES = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)     # explained_variance's choices of the ridge, relative


def _ridge_decoder(X, Z, ridge):
    """Ridge least squares Z ≈ (X - x_mean) W + z_mean: X (n, d), Z (n, K) float64 -> a function
    of new descriptors (m, d) -> (m, K). The penalty ridge * trace(Xc^T Xc) / d on W (Xc the
    centred X; a scale-free ridge, as trace / d is Xc^T Xc's mean eigenvalue), none on the bias."""
    xp = get_array_module(X)
    x_mean, z_mean = X.mean(0), Z.mean(0)
    Xc = X - x_mean
    gram = Xc.T @ Xc                                                          # (d, d)
    penalty = ridge * xp.trace(gram) / len(gram) + 1e-12                      # > 0 if X is constant
    W = xp.linalg.solve(gram + penalty * xp.eye(len(gram)), Xc.T @ (Z - z_mean))   # (d, K)
    return lambda X_new: (X_new - x_mean) @ W + z_mean


def _explained(Z, Z_hat, z_mean):
    """1 - sum((Z - Z_hat)²) / sum((Z - z_mean)²), over all rows and features; a device scalar."""
    return 1 - ((Z - Z_hat) ** 2).sum() / ((Z - z_mean) ** 2).sum()


def explained_variance(net, target_model, images, n_fit=2048, n_eval=1024, size=64, seed=0,
                       ridge=None):
    """Share of the distillation target's variance that a linear decoder on net's descriptors
    explains on held-out patches.

    target_model: the ImageNet network teacher pretraining distils (imagenet.load_efficientnet_lite0
    or load_resnet18, or anything with preprocess(x01) and features(x) -> (N, K)), on net's device.
    images: held-out natural images (N, 3, H, W) or a list of (3, H_i, W_i), N >= 2.

    n_fit + n_eval random p x p patches are drawn (seeded); for each, X the descriptor (d,) and
    Z = target_model.features(target_model.preprocess(resize_batch(patch, size))) (K,), as
    teacher pretraining regresses it (before its centring and scaling, which EV ignores). On the
    first n_fit, a decoder Ẑ = X W + b is fitted by ridge least squares in float64 (penalty
    ridge * trace(Xc^T Xc) / d on W, none on b, Xc the centred descriptors); on the other n_eval

        EV = 1 - sum((Z - Ẑ)²) / sum((Z - mean_fit(Z))²),   summed over patches and features,

    mean_fit(Z) the fit set's mean. 1: the descriptors determine the target linearly; 0: no
    better than the fit set's mean; below 0: worse. ridge=None picks the ridge from RIDGES on
    the fit set alone (fitted on its first three quarters, the best on its last quarter, then
    refitted on all of it): with n_fit not far above d a nearly unpenalised decoder overfits
    and EV falls with n_fit; the evaluation patches are never used to choose.

    The decoder is fitted here, not taken from training, so that any network is measured the
    same way: an untrained one, a metric-only one (which never had a decoder) and a distilled
    one. The two sets are separate draws; on few images their patches may overlap. Returns a
    float."""
    if n_fit < 8 or n_eval < 1:
        raise ValueError(f"explained_variance needs n_fit >= 8 and n_eval >= 1, got {n_fit}, {n_eval}")
    patches = PatchSampler(images, net.p, seed=seed).patches(n_fit + n_eval)
    X = _descriptors(net, patches)
    xp = get_array_module(X)
    X = X.astype(xp.float64)                                                  # (n, d)
    Z = _distillation_targets(target_model, patches, xp, size).astype(xp.float64)   # (n, K)
    Xf, Zf, Xe, Ze = X[:n_fit], Z[:n_fit], X[n_fit:], Z[n_fit:]
    if ridge is None:
        m = n_fit * 3 // 4
        scores = [_explained(Zf[m:], _ridge_decoder(Xf[:m], Zf[:m], r)(Xf[m:]), Zf[:m].mean(0))
                  for r in RIDGES]
        ridge = RIDGES[int(asnumpy(xp.argmax(xp.stack(scores))))]
    decoder = _ridge_decoder(Xf, Zf, ridge)
    return float(asnumpy(_explained(Ze, decoder(Xe), Zf.mean(0))))


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
