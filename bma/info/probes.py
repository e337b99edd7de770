"""Information-theoretic probes of a trained BMA-Memory (Table 1 of the plan), from arrays the trainer builds.

Independent of the model: ``compute_probes`` takes numpy arrays computed on held-out data (:class:`ProbeInputs`)
and returns ``{"info/<quantity>/<estimator>": nats}``. Every quantity, its estimator and its caveats are in
docs/information.md; the short version:

  memory     H_Wv, H_Ws (mean address entropy), H_Mv, H_Ms (entropy of the mean address), eff_slots_v/s = exp(H_M),
             I_slot_class_v/s (argmax slot vs class, Miller-Madow)
  recall     I_fv_fsmem, I_fs_fvmem with each requested MI estimator; H_fsmem_given_fv, H_fvmem_given_fs as the
             address entropy (operational proxy) and as a noise-regularised linear-Gaussian bound
  represent. I_hv_Y, I_hs_Y, I_fv_Y, I_fs_Y (probe bound H(Y) - CE); I_hv_Xv_Xs, I_hs_Xs_Xv, I_hv_Xs, I_hs_Xv
             (InfoNCE with a Gaussian critic, held-out)
  pairing    I_zv_zs with each estimator, plus infonce_cos (the model's own cosine critic, temperature fitted)
  cycles     I_S_Ipseudo, I_Ipseudo_Sprime, I_S_Sprime (each estimator); dH_* (entropy change per step at fixed
             total variance); dI_* (class information gained per step); mirrored for the image cycle

Estimators other than ``auto``, ``gaussian``, ``cca`` and ``copula`` see each variable projected to its first
``project_dim`` principal components (fitted on the sample): k-NN estimators are unusable at the model's 128-d
features (DESIGN.md). The closed forms (and ``auto``, which picks the copula's closed form at that dimension) see the
full features, with their exact small-sample bias correction.

Flags: an estimate an estimator flags (Estimate.flags) or cannot compute is NaN, with the reason in
``info/flag/<quantity>/<estimator>`` (a code of FLAG_CODES), in ``reasons`` when the caller passes a dict, and in a
warning of the ``bma.info`` logger; ``info/n_flagged`` counts them among ``info/n_estimates``.

Information plane: the deterministic-map quantities (recall, cycles) also get a noise-regularised MI,
``gauss_noise_<mi_sigma>``: finite by definition (docs/information.md, section 4a). Held-out quantities (probe
bounds, critics, the noise-regularised conditional entropy) fit on one random half of the rows and evaluate on the
other.

Cost: N <= ``max_samples`` rows (``EvalConfig.info_samples`` by default, subsampled with ``seed``); neural estimators only when asked.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar

from bma.config import EvalConfig  # the probes' defaults are the trial's (one owner)
from bma.record import CYCLES, cycle_steps  # the cycles' names (the record owns the metric names)
from bma.info.estimators import CONTINUOUS_MI_ESTIMATORS, get_mi_estimator
from bma.info.estimators.discrete import MillerMadowMI, entropy_of_distribution, plugin_entropy_from_counts
from bma.info.interface import as_2d

PREFIX = "info/"
log = logging.getLogger("bma.info")

# estimators that see the full features (closed forms, cheap at any dimension, with their own small-sample bias
# correction); every other one sees each variable reduced to its first project_dim principal components
FULL_FEATURE_ESTIMATORS = ("auto", "gaussian", "cca", "copula")
# info/flag/<quantity>/<estimator> = the code of the first reason an estimate was flagged (its value is then NaN)
FLAG_CODES = {"diverged": 1.0, "above its ceiling": 2.0, "far below zero": 3.0, "unstable": 4.0, "infinite": 5.0,
              "not computable": 6.0}


@dataclass
class ProbeInputs:
    """Arrays on held-out data; row i of the image side and row i of the sound side are a (class-matched) pair.

    f_v, f_s: (N, d) encoder features. f_s_mem: (N, d) sound feature recalled from the image (f_v_mem: mirror).
    w_v, w_s: (N, n) address distributions (rows sum to 1). h_v, h_s: (N, 2d) [f; f_mem].
    z_v, z_s: (N, p) projections of the paired InfoNCE. y: (N,) int class in the common label space.
    s_cycle: (S, I_pseudo, S') each (N, d), sound -> pseudo image -> S'; v_cycle: (V, S_pseudo, V'); None skips.
    has_memory: False for the unimodal variant: the memory fields may then be None and are ignored.
    """

    f_v: np.ndarray
    f_s: np.ndarray
    f_s_mem: np.ndarray | None
    f_v_mem: np.ndarray | None
    w_v: np.ndarray | None
    w_s: np.ndarray | None
    h_v: np.ndarray
    h_s: np.ndarray
    z_v: np.ndarray | None
    z_s: np.ndarray | None
    y: np.ndarray
    s_cycle: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    v_cycle: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    has_memory: bool = True


# -- building blocks (pure functions; each tested on its own) -------------------------------------------------------


def address_entropy(w: np.ndarray) -> float:
    """Mean over rows of -sum_r w_r log w_r: (N, n) -> nats. 0 for one-hot rows, log n for uniform rows."""
    return float(entropy_of_distribution(_normalise_rows(w), axis=1).mean())


def marginal_address_entropy(w: np.ndarray) -> float:
    """Entropy of the mean address distribution (slot usage): (N, n) -> nats, in [0, log n]."""
    return float(entropy_of_distribution(_normalise_rows(w).mean(axis=0)))


def _normalise_rows(w: np.ndarray) -> np.ndarray:
    w = np.clip(np.asarray(w, dtype=np.float64), 0.0, None)
    s = w.sum(axis=1, keepdims=True)
    if np.any(s <= 0):
        raise ValueError("w: every address distribution needs positive mass")
    return w / s


def pca_project(x: np.ndarray, dim: int) -> np.ndarray:
    """First ``dim`` principal-component scores of x (N, d), fitted on x itself: (N, min(dim, d)).

    x is returned centred but otherwise unchanged when d <= dim. The k-NN and neural estimators standardise each
    column themselves, so the scale of the scores does not matter.
    """
    xc = x - x.mean(axis=0)
    if x.shape[1] <= dim:
        return xc
    return xc @ _top_principal_axes(xc, dim)


def probe_bound(h: np.ndarray, y: np.ndarray, fit: np.ndarray, test: np.ndarray,
                max_iter: int = EvalConfig.probe_max_iter) -> float:
    """Variational lower bound I(h; Y) >= H(Y) - CE, nats.

    A multinomial logistic regression (L2, C = 1, standardised features) is fitted on the rows ``fit``; CE is its
    cross-entropy on the rows ``test`` and H(Y) the plug-in entropy of the labels of ``test``. Any fixed
    predictor q gives E[-log q(Y|h)] >= H(Y|h), so the value is a lower bound up to sampling error; it may be
    negative when the probe generalises worse than the label prior.
    """
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    classes, y_idx = np.unique(y, return_inverse=True)
    k = len(classes)
    h_test_labels = plugin_entropy_from_counts(np.bincount(y_idx[test], minlength=k))
    if k < 2:
        return 0.0
    mu, sd = h[fit].mean(0), h[fit].std(0) + 1e-8
    xf, xt = (h[fit] - mu) / sd, (h[test] - mu) / sd
    fit_classes = np.unique(y_idx[fit])
    q = np.zeros((len(test), k))
    if len(fit_classes) == 1:
        q[:, fit_classes[0]] = 1.0
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model = LogisticRegression(C=1.0, max_iter=max_iter).fit(xf, y_idx[fit])
        q[:, model.classes_] = model.predict_proba(xt)
    # a class never seen in the fit half gets a tiny probability (q stays a distribution, so still a valid bound)
    q = np.clip(q, 1e-12, None)
    q /= q.sum(axis=1, keepdims=True)
    ce = float(-np.log(q[np.arange(len(test)), y_idx[test]]).mean())
    return h_test_labels - ce


def _logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    # scipy.special.logsumexp costs ~10x this on (500, 500) for checks the probes do not need
    m = a.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(a - m).sum(axis=axis, keepdims=True))).squeeze(axis)


def _top_principal_axes(xc: np.ndarray, dim: int) -> np.ndarray:
    """(d, dim) leading principal axes of centred xc (N, d), from the (d, d) covariance's eigendecomposition."""
    evals, evecs = np.linalg.eigh(xc.T @ xc)
    return evecs[:, ::-1][:, :dim]


def infonce_from_scores(scores: np.ndarray) -> float:
    """Symmetric InfoNCE bound of a (B, B) score matrix (diagonal = pairs), nats; <= log B."""
    b = scores.shape[0]
    d = np.diagonal(scores)
    rows = (d - _logsumexp(scores, axis=1)).mean()
    cols = (d - _logsumexp(scores, axis=0)).mean()
    return float(0.5 * (rows + cols) + math.log(b))


ROWS_PER_CRITIC_DIM = 10  # fitted rows per critic component on each side (2k joint dims from n rows: k <= n / 10)


def gaussian_critic_infonce(
    a: np.ndarray, b: np.ndarray, fit: np.ndarray, test: np.ndarray, critic_dim: int = 32
) -> tuple[float, float]:
    """InfoNCE on the rows ``test`` with a Gaussian critic fitted on the rows ``fit``: (bound, log B), nats.

    The critic is the pointwise MI of a joint Gaussian, T(a, b) = log p(a, b) - log p(a) - log p(b), fitted to
    the first ``critic_dim`` principal components of each side (Ledoit-Wolf shrinkage of the joint covariance,
    which is singular when a and b share coordinates). The optimal InfoNCE critic when the data are Gaussian;
    for any data a fixed critic evaluated on held-out pairs gives a valid lower bound (<= log B).

    At most one component per ``ROWS_PER_CRITIC_DIM`` fitted rows on each side: with 32 + 32 components from 150
    rows (info_samples 300), Ledoit-Wolf shrinks the joint covariance all the way to a multiple of the identity, the
    cross block vanishes, every score is the same and the bound is exactly 0, whatever the dependence (measured on
    class-driven 128-d features: 0.0 at 32 components, 2.17 nats at 16, 2.06 at 8). A bound of 0 stays a valid
    bound (a constant critic), and it is what independent data give; but a *weak* cross-dependence is shrunk away
    too (total shrinkage: 0 at a class signal of 0.3 sd where a fixed ridge recovers 0.27 nats), so 0 here means
    "not seen at this N", never "independent" (docs/information-results.md).
    """
    from sklearn.covariance import ledoit_wolf

    critic_dim = max(1, min(critic_dim, len(fit) // ROWS_PER_CRITIC_DIM))

    def reduce(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mu = m[fit].mean(0)
        mc = m - mu
        if m.shape[1] > critic_dim:
            mc = mc @ _top_principal_axes(mc[fit], critic_dim)
        sd = mc[fit].std(0) + 1e-12
        return mc[fit] / sd, mc[test] / sd

    af, at = reduce(a)
    bf, bt = reduce(b)
    da = af.shape[1]
    cov, _ = ledoit_wolf(np.hstack([af, bf]), assume_centered=True)
    prec = np.linalg.inv(cov)
    # T = -1/2 [a; b]^T (Sigma^-1 - blockdiag(Saa^-1, Sbb^-1)) [a; b] + const
    q = prec.copy()
    q[:da, :da] -= np.linalg.inv(cov[:da, :da])
    q[da:, da:] -= np.linalg.inv(cov[da:, da:])
    qaa, qab, qbb = q[:da, :da], q[:da, da:], q[da:, da:]
    ta = np.einsum("ij,jk,ik->i", at, qaa, at)  # (B,)
    tb = np.einsum("ij,jk,ik->i", bt, qbb, bt)  # (B,)
    scores = -0.5 * (ta[:, None] + 2.0 * at @ qab @ bt.T + tb[None, :])  # (B, B)
    return infonce_from_scores(scores), math.log(len(test))


def cosine_critic_infonce(za: np.ndarray, zb: np.ndarray, fit: np.ndarray, test: np.ndarray) -> tuple[float, float]:
    """InfoNCE on ``test`` with the contrastive loss's own critic cos(z_a, z_b) / tau, tau fitted on ``fit``.

    The paired loss L_pair is this bound with the model's tau_l; fitting tau on the other half makes the value
    the best bound this critic family gives on held-out pairs. Returns (bound, log B), nats; bound <= log B.
    """

    def unit(m: np.ndarray) -> np.ndarray:
        return m / (np.linalg.norm(m, axis=1, keepdims=True) + 1e-12)

    cf = unit(za[fit]) @ unit(zb[fit]).T
    ct = unit(za[test]) @ unit(zb[test]).T
    res = minimize_scalar(
        lambda lt: -infonce_from_scores(cf / math.exp(lt)),
        bounds=(math.log(1e-3), math.log(10.0)),
        method="bounded",
        options={"xatol": 0.02},  # 2 % in tau: far below the sampling error of the bound
    )
    return infonce_from_scores(ct / math.exp(res.x)), math.log(len(test))


def noisy_gaussian_entropy(x: np.ndarray, sigma: float) -> float:
    """Gaussian (maximum-entropy) estimate of H(x / s + sigma * eps), nats, s^2 the mean per-coordinate variance.

    Normalising to unit mean variance makes the value a function of the *shape* of the covariance spectrum: it is
    largest (d/2 log(2 pi e (1 + sigma^2))) for an isotropic variable and falls as the variance concentrates in
    fewer directions; sigma keeps it finite for a variable confined to a subspace (e.g. the span of n slots).
    """
    xc = x - x.mean(0)
    s2 = float(xc.var(axis=0).mean())
    d = x.shape[1]
    if s2 <= 0:
        return 0.5 * d * math.log(2 * math.pi * math.e * sigma**2)
    cov = np.cov(xc / math.sqrt(s2), rowvar=False, ddof=1).reshape(d, d) + sigma**2 * np.eye(d)
    return 0.5 * float(np.linalg.slogdet(2 * math.pi * math.e * cov)[1])


def linear_gaussian_conditional_entropy(
    target: np.ndarray, given: np.ndarray, scale: float, sigma: float, fit: np.ndarray, test: np.ndarray
) -> float:
    """Upper bound on H(target / scale + sigma * eps | given) under linear-Gaussian predictors, nats.

    A linear regression target ~ given is fitted on ``fit``; the residual covariance R is measured on ``test``.
    H(Y | X) <= H(Y - g(X)) <= 1/2 log det(2 pi e (R + sigma^2 I)) for any fixed g. When target is a deterministic
    function of given, the true value is the floor d/2 log(2 pi e sigma^2); the excess over it is the part of the
    target a linear read-out of ``given`` cannot predict (the predictive "V-entropy" of Xu et al. 2020).
    """
    t = target / scale
    xf = np.hstack([given[fit], np.ones((len(fit), 1))])
    coef, *_ = np.linalg.lstsq(xf, t[fit], rcond=None)
    resid = t[test] - np.hstack([given[test], np.ones((len(test), 1))]) @ coef
    d = t.shape[1]
    cov = (resid.T @ resid) / len(test) + sigma**2 * np.eye(d)
    return 0.5 * float(np.linalg.slogdet(2 * math.pi * math.e * cov)[1])


def _wishart_logdet_excess(cov: np.ndarray, dof: int, rng: np.random.Generator, draws: int) -> float:
    """E[log det(S* + I)] - log det(cov + I), S* ~ Wishart(cov, dof) / dof: the bias of the plug-in, by simulation."""
    d = cov.shape[0]
    evals, evecs = np.linalg.eigh(cov)
    root = evecs * np.sqrt(np.clip(evals, 0.0, None))  # cov = root root^T
    eye = np.eye(d)
    base = float(np.linalg.slogdet(cov + eye)[1])
    sims = []
    for _ in range(draws):
        g = rng.standard_normal((dof, d)) @ root.T
        sims.append(float(np.linalg.slogdet(g.T @ g / dof + eye)[1]))
    return float(np.mean(sims)) - base


def noise_regularised_mi(a: np.ndarray, b: np.ndarray, scale: float, sigma: float, *, draws: int = 3,
                         seed: int = 0) -> float:
    """Linear-Gaussian I(a ; b / scale + sigma * eps), eps ~ N(0, I) independent of everything, nats.

    = 1/2 log det(I + C / sigma^2) - 1/2 log det(I + R / sigma^2), C the covariance of b / scale and R the residual
    covariance of its least-squares regression on a (unbiased OLS normalisation N - rank(a) - 1): the MI of the
    linear-Gaussian channel with the data's second moments, at noise level sigma relative to ``scale``. Finite for
    any relation, deterministic ones included (<= 1/2 log det(I + C / sigma^2)); 0 when b is linearly unpredictable
    from a. The log-determinants of sample covariances are biased (concavity; at d = 128, N = 300 the plug-in reads
    +2.3 nats under independence): each is corrected by its excess over ``draws`` Wishart simulations from the
    estimate itself (a parametric bootstrap, seeded by ``seed``; draws=0 disables). Measured error against
    closed-form truths at d = 64-128, N = 300 and 1000: docs/information.md, section 5c.
    Raises ValueError when N <= rank(a) + 2.
    """
    n, d = b.shape
    t = (b - b.mean(axis=0)) / (scale * sigma)
    ac = a - a.mean(axis=0)
    coef, _, rank, _ = np.linalg.lstsq(ac, t, rcond=None)
    if n <= rank + 2:
        raise ValueError(f"a: the noise-regularised MI needs N > rank(a) + 2 = {rank + 2}, got N = {n}")
    resid = t - ac @ coef
    c = t.T @ t / (n - 1)
    r = resid.T @ resid / (n - rank - 1)
    eye = np.eye(d)
    value = 0.5 * float(np.linalg.slogdet(c + eye)[1] - np.linalg.slogdet(r + eye)[1])
    if draws:
        rng = np.random.default_rng(seed)
        value -= 0.5 * (_wishart_logdet_excess(c, n - 1, rng, draws) - _wishart_logdet_excess(r, n - rank - 1, rng,
                                                                                               draws))
    return value


def flag_code(reason: str) -> float:
    """The FLAG_CODES code of a reason (its leading words), 6 (not computable) for anything else."""
    for prefix, code in FLAG_CODES.items():
        if reason.startswith(prefix):
            return code
    return FLAG_CODES["not computable"]


# -- compute_probes ------------------------------------------------------------------------------------------------


def _rows(a: np.ndarray | None, name: str, n: int | None) -> np.ndarray | None:
    if a is None:
        return None
    arr = as_2d(a, name, min_samples=2)
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name}: expected {n} rows like y, got {arr.shape[0]}")
    return arr


def compute_probes(
    inp: ProbeInputs,
    estimators: tuple[str, ...] = EvalConfig.info_estimators,
    seed: int = 0,
    project_dim: int = 8,
    *,
    max_samples: int = EvalConfig.info_samples,
    noise_sigma: float = 0.1,
    mi_sigma: float = 1.0,
    probe_max_iter: int = EvalConfig.probe_max_iter,
    reasons: dict[str, str] | None = None,
) -> dict[str, float]:
    """All probes of the plan's Table 1 on held-out arrays: {"info/<quantity>/<estimator>": nats} + info/n_samples.

    estimators: continuous MI estimators (names in CONTINUOUS_MI_ESTIMATORS) for I_fv_fsmem, I_fs_fvmem, I_zv_zs
    and the cycle MIs; ``auto`` (the default) picks for itself. seed: subsampling, the fit/evaluate split, estimator
    seeds. project_dim: principal components each variable is reduced to before every estimator not in
    FULL_FEATURE_ESTIMATORS. max_samples: rows used at most (cost bound). noise_sigma: scale of the noise in the
    noise-regularised entropies (named in the metric, e.g. gauss_noise_0.1). mi_sigma: the same for the
    noise-regularised MIs (gauss_noise_1). reasons: if a dict, filled with {metric: why} for every flagged estimate.
    NaN marks a flagged estimate or one the estimator cannot compute on this sample (e.g. gaussian with
    N <= dx + dy + 1); info/flag/<quantity>/<estimator> then holds its reason code (FLAG_CODES).
    """
    from threadpoolctl import threadpool_limits

    unknown = [e for e in estimators if e not in CONTINUOUS_MI_ESTIMATORS]
    if unknown:
        raise ValueError(f"estimators: unknown or not continuous MI estimators {unknown}; expected names from "
                         f"{list(CONTINUOUS_MI_ESTIMATORS)}")
    if project_dim < 1 or max_samples < 20 or noise_sigma <= 0 or mi_sigma <= 0:
        raise ValueError("project_dim >= 1, max_samples >= 20, noise_sigma > 0 and mi_sigma > 0 expected")
    why: dict[str, str] = {} if reasons is None else reasons
    # the matrices here are small: multi-threaded BLAS only adds overhead (10x slower measured on 2 busy cores)
    with threadpool_limits(limits=1, user_api="blas"):
        out = _compute(inp, tuple(estimators), seed, project_dim, max_samples, noise_sigma, mi_sigma,
                       probe_max_iter, why)
    for metric, reason in why.items():
        log.warning("%s: NaN (%s)", metric, reason)
    return out


def _compute(
    inp: ProbeInputs,
    estimators: tuple[str, ...],
    seed: int,
    project_dim: int,
    max_samples: int,
    sigma: float,
    mi_sigma: float,
    probe_max_iter: int,
    reasons: dict[str, str],
) -> dict[str, float]:
    y_all = np.asarray(inp.y)
    if y_all.ndim != 1:
        raise ValueError(f"y: expected shape (N,), got {y_all.shape}")
    if np.issubdtype(y_all.dtype, np.floating) and not np.all(np.isfinite(y_all)):
        raise ValueError("y: contains NaN or infinite labels")
    n_all = y_all.shape[0]
    if n_all < 20:
        raise ValueError(f"y: expected at least 20 samples, got {n_all}")
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n_all, size=max_samples, replace=False)) if n_all > max_samples else np.arange(n_all)
    n = len(rows)
    y = y_all[rows]
    perm = rng.permutation(n)
    fit, test = perm[: n // 2], perm[n // 2 :]

    def arr(a: np.ndarray | None, name: str) -> np.ndarray | None:
        a = _rows(a, name, n_all)
        return None if a is None else a[rows]

    out: dict[str, float] = {f"{PREFIX}n_samples": float(n), f"{PREFIX}n_estimates": 0.0, f"{PREFIX}n_flagged": 0.0}
    sig, mi_sig = f"gauss_noise_{sigma:g}", f"gauss_noise_{mi_sigma:g}"
    unseeded = ("gaussian", "cca", "copula")
    mi_estimators = {e: get_mi_estimator(e, **({} if e in unseeded else {"seed": seed})) for e in estimators}
    projected: dict[int, np.ndarray] = {}

    def proj(a: np.ndarray) -> np.ndarray:
        key = id(a)
        if key not in projected:
            projected[key] = pca_project(a, project_dim)
        return projected[key]

    def put(name: str, value: float) -> None:
        out[PREFIX + name] = float(value)

    def record(metric: str, value: float, flags: tuple[str, ...]) -> None:
        out[f"{PREFIX}n_estimates"] += 1
        if flags:
            reasons[PREFIX + metric] = "; ".join(flags)
            out[f"{PREFIX}n_flagged"] += 1
            out[f"{PREFIX}flag/{metric}"] = flag_code(flags[0])
            value = math.nan
        put(metric, value)

    def mi_all(quantity: str, a: np.ndarray, b: np.ndarray) -> None:
        for name, est in mi_estimators.items():
            try:
                e = est.estimate(a, b) if name in FULL_FEATURE_ESTIMATORS else est.estimate(proj(a), proj(b))
                record(f"{quantity}/{name}", e.value, e.flags)
            except ValueError as exc:  # too few samples for this estimator at this dimension
                record(f"{quantity}/{name}", math.nan, (f"not computable: {exc}",))

    def noise_mi(quantity: str, a: np.ndarray, b: np.ndarray, scale: float) -> None:
        try:
            record(f"{quantity}/{mi_sig}", noise_regularised_mi(a, b, scale, mi_sigma, seed=seed), ())
        except ValueError as exc:
            record(f"{quantity}/{mi_sig}", math.nan, (f"not computable: {exc}",))

    def rms(m: np.ndarray) -> float:
        return math.sqrt(float(m.var(axis=0).mean())) or 1.0

    f_v, f_s = arr(inp.f_v, "f_v"), arr(inp.f_s, "f_s")
    h_v, h_s = arr(inp.h_v, "h_v"), arr(inp.h_s, "h_s")

    # -- memory: addressing, slot usage, recall ----------------------------------------------------------------
    if inp.has_memory:
        w_v, w_s = arr(inp.w_v, "w_v"), arr(inp.w_s, "w_s")
        fs_mem, fv_mem = arr(inp.f_s_mem, "f_s_mem"), arr(inp.f_v_mem, "f_v_mem")
        for side, w in (("v", w_v), ("s", w_s)):
            if w is None:
                continue
            h_m = marginal_address_entropy(w)
            put(f"H_W{side}/exact", address_entropy(w))
            put(f"H_M{side}/exact", h_m)
            put(f"eff_slots_{side}/exact", math.exp(h_m))
            put(f"I_slot_class_{side}/miller_madow", MillerMadowMI().estimate(w.argmax(axis=1), y).value)
        for quantity, cond, f, f_mem, partner, w in (
            ("fsmem_given_fv", "I_fv_fsmem", f_v, fs_mem, f_s, w_v),
            ("fvmem_given_fs", "I_fs_fvmem", f_s, fv_mem, f_v, w_s),
        ):
            if f_mem is None:
                continue
            mi_all(cond, f, f_mem)
            if w is not None:
                put(f"H_{quantity}/address_entropy", address_entropy(w))
            scale = rms(partner)
            noise_mi(cond, f, f_mem, scale)
            put(f"H_{quantity}/{sig}", linear_gaussian_conditional_entropy(f_mem, f, scale, sigma, fit, test))

    # -- representation: class information and InfoNCE against the true pair ------------------------------------
    for name, h in (("hv", h_v), ("hs", h_s), ("fv", f_v), ("fs", f_s)):
        put(f"I_{name}_Y/probe_bound", probe_bound(h, y, fit, test, probe_max_iter))
    for quantity, a, b in (
        ("I_hv_Xv_Xs", h_v, np.hstack([f_v, f_s])),
        ("I_hs_Xs_Xv", h_s, np.hstack([f_s, f_v])),
        ("I_hv_Xs", h_v, f_s),
        ("I_hs_Xv", h_s, f_v),
    ):
        value, log_b = gaussian_critic_infonce(a, b, fit, test)
        put(f"{quantity}/infonce_bound", value)
        put(f"{quantity}/infonce_logN", log_b)

    # -- paired learning -------------------------------------------------------------------------------------------
    z_v, z_s = arr(inp.z_v, "z_v"), arr(inp.z_s, "z_s")
    if z_v is not None and z_s is not None:
        mi_all("I_zv_zs", z_v, z_s)
        value, log_b = cosine_critic_infonce(z_v, z_s, fit, test)
        put("I_zv_zs/infonce_cos", value)
        put("I_zv_zs/infonce_logN", log_b)

    # -- cycles: source A -> pseudo B (other modality) -> A' -----------------------------------------------------
    if inp.has_memory:
        for cycle, (a_name, b_name) in zip((inp.s_cycle, inp.v_cycle), CYCLES):  # sound cycle first
            if cycle is None:
                continue
            if len(cycle) != 3:
                raise ValueError(f"{a_name.lower()}_cycle: expected three arrays (source, pseudo, recon)")
            a, b, a2 = (arr(c, f"{a_name.lower()}_cycle[{i}]") for i, c in enumerate(cycle))
            first, second, whole = cycle_steps(a_name, b_name)  # S_Ipseudo, Ipseudo_Sprime, S_Sprime
            mi_all(f"I_{first}", a, b)
            mi_all(f"I_{second}", b, a2)
            mi_all(f"I_{whole}", a, a2)
            # noise at the scale of each target's modality: the source's for the reconstruction, the other
            # modality's true features for the pseudo feature (I_pseudo is an image-space vector)
            other = f_v if a_name == "S" else f_s
            noise_mi(f"I_{first}", a, b, rms(other))
            noise_mi(f"I_{second}", b, a2, rms(a))
            noise_mi(f"I_{whole}", a, a2, rms(a))
            h_a, h_b, h_a2 = (noisy_gaussian_entropy(m, sigma) for m in (a, b, a2))
            put(f"dH_{first}/{sig}", h_b - h_a)
            put(f"dH_{second}/{sig}", h_a2 - h_b)
            i_a, i_b, i_a2 = (probe_bound(m, y, fit, test, probe_max_iter) for m in (a, b, a2))
            put(f"I_{a_name}_Y/probe_bound", i_a)
            put(f"dI_{first}/probe_bound", i_b - i_a)
            put(f"dI_{second}/probe_bound", i_a2 - i_b)
    return out
