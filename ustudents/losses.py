"""The losses of "Uninformed Students" (Bergmann et al., CVPR 2020), each with its gradient.

Every function returns (loss, grads): `loss` is a 0-d array of the input's module (NumPy or
CuPy) and dtype, so a GPU loss stays on the GPU until someone calls float(loss) (once per log
line); `grads` are the gradients of that loss with respect to the inputs, in their shapes.
Targets that come from fixed networks (ImageNet features, teacher descriptors) get none.

Teacher pretraining, docs/method.md §1:  L(T̂) = λk·Lk + λm·Lm + λc·Lc
    distillation(y, target)   Lk = ||D(T̂(p)) − P(p)||²
    triplet(a, p, n, margin)  Lm = max(0, δ + δ⁺ − δ⁻), with anchor swap
    compactness(d)            Lc: decorrelate the descriptor dimensions
    teacher_loss(losses, weights) adds them up.
Student training, docs/method.md §4:
    regression(pred, target)  L(S_i) = 1/(w·h) Σ_(r,c) ||μ^{S_i}_(r,c) − (y^T_(r,c) − μ) ⊘ σ||²

Shapes: B batch of patches, d descriptor size (128), K ImageNet feature size (512 or 1280),
N images, D channels, H W image size.
"""
from .backend import get_array_module


def _check_pair(name, x, y, ndim, what):
    """Both arrays have `ndim` dims and the same shape, else a ValueError naming the shapes."""
    for arg, v in (x, y):
        if v.ndim != ndim:
            raise ValueError(f"{name}: expected {arg} of shape {what}, got shape {tuple(v.shape)}")
    (ax, vx), (ay, vy) = x, y
    if vx.shape != vy.shape:
        raise ValueError(f"{name}: {ax} has shape {tuple(vx.shape)} but {ay} has shape {tuple(vy.shape)}")


# ---- teacher: metric learning --------------------------------------------------------------

def triplet(a, p, n, margin=1.0):
    """Triplet loss with anchor swap (docs/method.md §1; Balntas et al. 2016), mean over the batch.

    a, p, n (B, d): descriptors of the anchor patch, the positive (the same patch slightly
    moved, plus noise) and the negative (a patch of another image). With squared distances

        δ⁺ = ||a − p||²,   δ⁻ = min(||a − n||², ||p − n||²)
        loss = 1/B Σ_b max(0, margin + δ⁺_b − δ⁻_b)

    The swap takes the harder of the two negative distances, so the positive also learns to
    stay away from the negative. Gradients flow only into the distance that is the min; on a tie
    the anchor's ||a − n||² wins. A sample on the hinge (margin + δ⁺ − δ⁻ <= 0) gets zero gradient.

    Returns (loss, (da, dp, dn)), loss a 0-d array, da dp dn (B, d).
    """
    _check_pair("triplet", ("a", a), ("p", p), 2, "(B, d)")
    _check_pair("triplet", ("a", a), ("n", n), 2, "(B, d)")
    xp = get_array_module(a, p, n)
    B = a.shape[0]
    ap, an, pn = a - p, a - n, p - n                               # (B, d)
    d_pos = (ap * ap).sum(axis=1)                                  # (B,)
    d_an, d_pn = (an * an).sum(axis=1), (pn * pn).sum(axis=1)      # (B,)
    swap = d_pn < d_an                                             # the positive is nearer to n
    d_neg = xp.where(swap, d_pn, d_an)
    hinge = margin + d_pos - d_neg                                 # (B,)
    loss = xp.maximum(hinge, 0).mean()

    # d loss / d δ = 1/B past the hinge, 0 on it; δ⁻'s gradient goes to one branch only.
    active, swap = (hinge > 0)[:, None], swap[:, None]            # (B, 1) masks
    da = active * (ap - ~swap * an) * (2 / B)                      # (B, d), in a's dtype
    dp = active * (-ap - swap * pn) * (2 / B)
    dn = active * (~swap * an + swap * pn) * (2 / B)
    return xp.asarray(loss), (da, dp, dn)


# ---- teacher: descriptor compactness -------------------------------------------------------

def compactness(d, eps=1e-8):
    """Descriptor compactness (docs/method.md §1): decorrelate the D descriptor components over a batch.

    d (B, D) descriptors, B >= 2, D >= 2. Steps:
      1. standardise each component over the batch with the population std:
         z = (d − mean) / sqrt(var + eps); eps (added to the variance) only keeps a component
         that is constant over the batch at z = 0 instead of 0/0;
      2. C = zᵀ z / B, the D x D correlation matrix (diagonal ≈ 1);
      3. loss = 1/(D(D−1)) Σ_{i≠j} C_ij², the MEAN SQUARE of the off-diagonal entries.
    The paper writes a plain sum of the off-diagonal entries, which rewards negative
    correlation without bound and can go negative; the square penalises both signs, and the
    mean keeps the scale independent of D. Perfectly correlated components give 1; independent
    ones give about 1/B (sampling noise of a correlation over B samples).

    Returns (loss, dd), loss a 0-d array, dd (B, D): the full gradient, through the mean and
    the std of the standardisation.
    """
    if d.ndim != 2 or d.shape[0] < 2 or d.shape[1] < 2:
        raise ValueError(f"compactness: expected d of shape (B, D) with B >= 2 and D >= 2, "
                         f"got shape {tuple(d.shape)}")
    xp = get_array_module(d)
    B, D = d.shape
    xc = d - d.mean(axis=0)                                        # (B, D)
    s = xp.sqrt((xc * xc).mean(axis=0) + eps)                      # (D,)
    z = xc / s                                                     # (B, D)
    C = z.T @ z / B                                                # (D, D)
    off = 1 - xp.eye(D, dtype=d.dtype)
    loss = (C * C * off).sum() / (D * (D - 1))

    dC = 2 * C * off / (D * (D - 1))                               # (D, D), symmetric
    dz = 2 * (z @ dC) / B                                          # C = zᵀz/B: z (dC + dCᵀ)/B
    # Backward through z = (d − mean)/std, as in batch normalisation. The dz.mean term is the
    # path through the mean; it is zero here (dz = z·dC·2/B and z has zero column means) but
    # kept, so that the line stays the standardisation's backward for any upstream dz.
    dd = (dz - dz.mean(axis=0) - z * (dz * z).mean(axis=0)) / s
    return xp.asarray(loss), dd


# ---- teacher: knowledge distillation -------------------------------------------------------

def distillation(y, target):
    """Knowledge distillation (docs/method.md §1): Lk = ||D(T̂(p)) − P(p)||², mean over the batch.

    y (B, K): the decoded teacher output D(T̂(p)), where the decoder D is one fully connected
    layer, y, cache = layers.linear_forward(desc, w, b) with desc (B, 128), w (K, 128);
    the teacher loop sends dy back through layers.linear_backward(dy, cache).
    target (B, K): the pretrained ImageNet network's features P(p) (K = 512 for ResNet-18,
    1280 for EfficientNet-Lite0); fixed, so it gets no gradient.

        loss = 1/B Σ_b ||y_b − target_b||²      (a sum over K, as the paper writes it)

    Dividing by K as well would only rescale λk. Returns (loss, dy), loss 0-d, dy (B, K).
    """
    _check_pair("distillation", ("y", y), ("target", target), 2, "(B, K)")
    xp = get_array_module(y, target)
    r = y - target                                                 # (B, K)
    loss = (r * r).sum() / y.shape[0]
    return xp.asarray(loss), (2 / y.shape[0]) * r


def teacher_loss(losses, weights):
    """L(T̂) = λk·Lk + λm·Lm + λc·Lc (docs/method.md §1) as a weighted sum of named terms.

    losses: {name: loss}, e.g. {"distillation": Lk, "triplet": Lm, "compactness": Lc}, any
    subset; weights: {name: λ}, one for every name in losses (a missing one is an error, not 0).
    Gradients combine the same way: the teacher loop multiplies each term's gradients by its λ
    before they go back through the network, and the parameter gradients of all terms add up.
    A term with λ = 0 is best not computed at all.
    Returns the total as a 0-d array (of the first term's module).
    """
    missing = sorted(set(losses) - set(weights))
    if missing:
        raise ValueError(f"teacher_loss: no weight for {missing}; weights has {sorted(weights)}")
    total = sum(weights[k] * losses[k] for k in losses)
    xp = get_array_module(*losses.values())
    return xp.asarray(total)


# ---- students ------------------------------------------------------------------------------

def regression(pred, target):
    """Student loss (docs/method.md §4): L(S_i) = 1/(w·h) Σ_(r,c) ||pred_(r,c) − target_(r,c)||², mean over N.

    pred (N, D, H, W): the student's dense descriptors μ^{S_i}; target (N, D, H, W): the
    teacher's normalised descriptors (y^T − μ) ⊘ σ, fixed, so it gets no gradient. The squared
    norm sums over the D channels; pixels and images are averaged:

        loss = 1/(N·H·W) Σ_(n,r,c) Σ_D (pred − target)²

    Returns (loss, dpred), loss 0-d, dpred (N, D, H, W).
    """
    _check_pair("regression", ("pred", pred), ("target", target), 4, "(N, D, H, W)")
    xp = get_array_module(pred, target)
    N, D, H, W = pred.shape
    r = pred - target                                              # (N, D, H, W)
    loss = (r * r).sum() / (N * H * W)
    return xp.asarray(loss), (2 / (N * H * W)) * r
