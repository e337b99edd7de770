"""Variational MI lower bounds with a trained critic: ``infonce``, ``nwj``, ``mine``, ``smile``.

A critic T(x, y) (a small torch MLP) scores every pair of a batch: the diagonal of the (B, B) score matrix holds the
joint (paired) samples, the off-diagonal entries samples of the product of marginals. Each estimator trains the
critic with Adam on one half of the sample and reports its bound on the *other* half: a critic trained on a fixed
sample memorises it (DESIGN.md: train 6.2 nats, held-out -12), so only the held-out value is an estimate; the
train-half value is kept in ``Estimate.train_value`` to show the gap.

Bounds on a score matrix S (B, B), nats (Poole et al. 2019):
  infonce  mean_i [S_ii - logsumexp_j S_ij] + log B               <= log B  (van den Oord et al. 2018)
  nwj      mean_i S_ii - mean_{i != j} exp(S_ij - 1)               unbiased gradients, high variance (Nguyen et al.)
  mine     mean_i S_ii - log mean_{i != j} exp(S_ij)               Donsker-Varadhan; trained with the moving-average
                                                                   gradient correction of Belghazi et al. (2018)
  smile    mean_i S_ii - log mean_{i != j} exp(clip(S_ij, +-tau))  trained with the Jensen-Shannon objective,
                                                                   reported with the clipped DV (Song & Ermon 2020)

Deterministic given ``seed`` (the global torch RNG is forked, not touched). CPU by default; the defaults (separable
critic, one hidden layer of 64, embedding 32, at most 500 Adam steps of batch 128 with early stopping on a validation
fifth of the train half) take 0.2-0.6 s for N = 1000, d <= 32 on one CPU thread.

Flags (Estimate.flags; the value is then NaN and ``raw_value`` keeps the number): a held-out or train value that is
not finite (the critic diverged); InfoNCE above log B; SMILE above its clip (the density ratio it reports exceeds
e^clip, the most its partition term can balance); any bound below ``floor`` (-0.25 nats: a lower bound far below
zero means a critic worse than a constant); and an unstable value: dropping the 1 % of held-out pairs with the most
extreme critic scores moves the bound by more than max(0.25 nats, 25 %) (one extrapolated score decides it; NWJ's
-1e37 and SMILE's 4.1 nats for a true 0.22 on Student-t data were this).

Inputs: ``inputs="normal_scores"`` (default) feeds the critic each coordinate's normal scores, fitted on the train
half (held-out rows go through the train half's empirical CDF): an invertible map of each coordinate, so the MI is
unchanged, and a critic never sees a value far outside what it trained on, which is where it extrapolated on heavy
tails. ``"standardize"`` is the previous behaviour (train-half mean and std).

Data hunger: with N = 1000 the critic trains on 400 rows, and the held-out value is biased low: -0.02 at d = 1,
-0.13 (infonce) to -0.3 at d = 5 (I = 1), and it collapses at d = 25 (0.13 for a true 1.0); see
docs/information.md for the table. Use them where N is large or the dependence is low-dimensional.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from bma.info.interface import Estimate, check_pair, flagged

# -- bounds on a (B, B) score matrix, diagonal = joint samples -----------------------------------------------------


def _offdiag(scores: torch.Tensor) -> torch.Tensor:
    b = scores.shape[0]
    return scores.masked_select(~torch.eye(b, dtype=torch.bool, device=scores.device))  # (B (B - 1),)


def _logmeanexp(v: torch.Tensor) -> torch.Tensor:
    return torch.logsumexp(v, dim=0) - math.log(v.numel())


def infonce_bound(scores: torch.Tensor) -> torch.Tensor:
    b = scores.shape[0]
    return (scores.diagonal() - torch.logsumexp(scores, dim=1)).mean() + math.log(b)


def nwj_bound(scores: torch.Tensor) -> torch.Tensor:
    return scores.diagonal().mean() - torch.exp(_logmeanexp(_offdiag(scores) - 1.0))


def dv_bound(scores: torch.Tensor) -> torch.Tensor:
    return scores.diagonal().mean() - _logmeanexp(_offdiag(scores))


def smile_bound(scores: torch.Tensor, clip: float) -> torch.Tensor:
    return scores.diagonal().mean() - _logmeanexp(_offdiag(scores).clamp(-clip, clip))


def js_objective(scores: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon f-GAN objective (SMILE's training signal): E_p[-softplus(-T)] - E_q[softplus(T)]."""
    return -F.softplus(-scores.diagonal()).mean() - F.softplus(_offdiag(scores)).mean()


# -- critics -------------------------------------------------------------------------------------------------------


def _mlp(d_in: int, hidden: int, layers: int, d_out: int) -> nn.Sequential:
    mods: list[nn.Module] = []
    d = d_in
    for _ in range(layers):
        mods += [nn.Linear(d, hidden), nn.ReLU()]
        d = hidden
    mods.append(nn.Linear(d, d_out))
    return nn.Sequential(*mods)


class SeparableCritic(nn.Module):
    """T(x, y) = g(x) . h(y): all B^2 scores from 2B network evaluations."""

    def __init__(self, dx: int, dy: int, hidden: int, layers: int, embed_dim: int):
        super().__init__()
        self.g = _mlp(dx, hidden, layers, embed_dim)
        self.h = _mlp(dy, hidden, layers, embed_dim)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.g(x) @ self.h(y).T  # (B, B)


class ConcatCritic(nn.Module):
    """T(x, y) = f([x; y]): more expressive, B^2 network evaluations per batch."""

    def __init__(self, dx: int, dy: int, hidden: int, layers: int, embed_dim: int):
        super().__init__()
        self.f = _mlp(dx + dy, hidden, layers, 1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        pairs = torch.cat([x[:, None, :].expand(b, b, -1), y[None, :, :].expand(b, b, -1)], dim=-1)  # (B, B, dx+dy)
        return self.f(pairs).squeeze(-1)  # (B, B)


CRITICS = {"separable": SeparableCritic, "concat": ConcatCritic}


# -- inputs and checks ---------------------------------------------------------------------------------------------

INPUTS = ("normal_scores", "standardize")


def _scale_inputs(train: np.ndarray, test: np.ndarray, how: str) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) rows of one variable mapped for the critic, the map fitted on ``train`` only."""
    if how == "standardize":
        mu, sd = train.mean(0), train.std(0) + 1e-8
        return (train - mu) / sd, (test - mu) / sd
    from scipy.special import ndtri

    n = train.shape[0]
    out_train, out_test = np.empty_like(train), np.empty_like(test)
    for j in range(train.shape[1]):
        ref = np.sort(train[:, j])
        # mid-rank of each value among the train rows (ties share their average rank), in (0, n]
        for src, dst in ((train, out_train), (test, out_test)):
            lo = np.searchsorted(ref, src[:, j], side="left")
            hi = np.searchsorted(ref, src[:, j], side="right")
            rank = np.clip(0.5 * (lo + hi) + 0.5, 0.5, n + 0.5)
            dst[:, j] = ndtri(rank / (n + 1.0))
    return out_train, out_test


def _drop_extreme_pairs(scores: torch.Tensor, share: float = 0.01) -> torch.Tensor:
    """The (b', b') score matrix without the ceil(share * b) pairs whose row or column holds the largest |score|."""
    b = scores.shape[0]
    drop = max(1, math.ceil(share * b))
    if b - drop < 2:
        return scores
    extreme = torch.maximum(scores.abs().amax(dim=1), scores.abs().amax(dim=0))  # (b,)
    keep = torch.argsort(extreme)[: b - drop]
    return scores[keep][:, keep]


# -- estimators ----------------------------------------------------------------------------------------------------


class _CriticMI:
    """Train a critic on one half, report the bound on the other half (see the module docstring).

    critic: "separable" (default; cheap) or "concat". hidden, layers, embed_dim: critic size.
    steps, batch_size, lr: Adam training on the train half (batch_size is capped at the half's size).
    train_fraction: share of the rows the critic is trained on; the rest is held out.
    val_fraction, eval_every, patience: early stopping. ``val_fraction`` of the train half is set aside; every
        ``eval_every`` steps the bound on it is computed, training stops after ``patience`` evaluations without
        improvement and the best checkpoint is kept (0 disables: all ``steps`` are run).
    eval_batch_size: held-out rows per score matrix (None: the whole held-out part in one matrix); the held-out
        value averages the bound over disjoint batches of this size.
    seed: split, initialisation and batches. device: "cpu" (default) or a torch device string.
    inputs: "normal_scores" (default) or "standardize": how the critic's inputs are scaled (module docstring).
    floor: a held-out value below it is flagged (nats, < 0).
    threads: torch intra-op CPU threads while this estimate runs (restored afterwards; None leaves torch's
        setting). 1 by default: the critic's matrices are tiny, and on busy cores OpenMP threads that wait for each
        other made one estimate take minutes instead of a second (measured on the 2-core test machine under load).
    """

    name = "critic"

    def __init__(
        self,
        critic: str = "separable",
        hidden: int = 64,
        layers: int = 1,
        embed_dim: int = 32,
        steps: int = 500,
        batch_size: int = 128,
        lr: float = 1e-3,
        train_fraction: float = 0.5,
        val_fraction: float = 0.2,
        eval_every: int = 20,
        patience: int = 5,
        eval_batch_size: int | None = None,
        seed: int = 0,
        device: str = "cpu",
        threads: int | None = 1,
        inputs: str = "normal_scores",
        floor: float = -0.25,
    ):
        if critic not in CRITICS:
            raise ValueError(f"critic: expected one of {sorted(CRITICS)}, got {critic!r}")
        if steps < 1 or batch_size < 2 or hidden < 1 or layers < 0 or embed_dim < 1:
            raise ValueError("steps >= 1, batch_size >= 2, hidden >= 1, layers >= 0, embed_dim >= 1 expected")
        if not 0.0 < train_fraction < 1.0:
            raise ValueError(f"train_fraction: expected in (0, 1), got {train_fraction}")
        if not 0.0 <= val_fraction < 1.0 or eval_every < 1 or patience < 1:
            raise ValueError("val_fraction in [0, 1), eval_every >= 1, patience >= 1 expected")
        if eval_batch_size is not None and eval_batch_size < 2:
            raise ValueError(f"eval_batch_size: expected >= 2 or None, got {eval_batch_size}")
        if inputs not in INPUTS:
            raise ValueError(f"inputs: expected one of {INPUTS}, got {inputs!r}")
        if not floor < 0:
            raise ValueError(f"floor: expected < 0, got {floor}")
        self.critic, self.hidden, self.layers, self.embed_dim = critic, int(hidden), int(layers), int(embed_dim)
        self.steps, self.batch_size, self.lr = int(steps), int(batch_size), float(lr)
        self.train_fraction, self.eval_batch_size = float(train_fraction), eval_batch_size
        self.val_fraction, self.eval_every, self.patience = float(val_fraction), int(eval_every), int(patience)
        self.seed, self.device = int(seed), str(device)
        self.threads = threads
        self.inputs, self.floor = inputs, float(floor)

    def parameters(self) -> dict:
        return {
            "critic": self.critic,
            "hidden": self.hidden,
            "layers": self.layers,
            "embed_dim": self.embed_dim,
            "steps": self.steps,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "train_fraction": self.train_fraction,
            "val_fraction": self.val_fraction,
            "eval_every": self.eval_every,
            "patience": self.patience,
            "eval_batch_size": self.eval_batch_size,
            "seed": self.seed,
            "device": self.device,
            "threads": self.threads,
            "inputs": self.inputs,
            "floor": self.floor,
        }

    # subclasses: the bound reported, and the objective maximised in training
    def bound(self, scores: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def objective(self, scores: torch.Tensor) -> torch.Tensor:
        return self.bound(scores)

    def _reset_state(self) -> None:
        pass

    def _evaluate(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, trimmed: bool = False):
        """Mean bound over disjoint batches: (value, batch size), plus the trimmed value when asked (the bound with
        the 1 % of pairs whose critic scores are the most extreme left out of each batch)."""
        n = x.shape[0]
        b = n if self.eval_batch_size is None else min(self.eval_batch_size, n)
        values, trims = [], []
        with torch.no_grad():
            for start in range(0, n - b + 1, b):
                sl = slice(start, start + b)
                scores = model(x[sl], y[sl])  # (b, b)
                values.append(float(self.bound(scores)))
                if trimmed:
                    trims.append(float(self.bound(_drop_extreme_pairs(scores))))
        if trimmed:
            return float(np.mean(values)), b, float(np.mean(trims))
        return float(np.mean(values)), b

    def _flags(self, value: float, train_value: float, trimmed: float, b_eval: int) -> list[str]:
        """Why the held-out value is not an estimate (module docstring); [] for a valid one."""
        if not (math.isfinite(value) and math.isfinite(train_value)):
            return [f"diverged: the critic's bound is {value:.3g} held-out, {train_value:.3g} on its training rows"]
        out = []
        ceiling = self._ceiling(b_eval)
        if ceiling is not None and value > ceiling[0] + 1e-6:
            out.append(f"above its ceiling: {value:.3g} > {ceiling[1]} = {ceiling[0]:.3g}")
        if value < self.floor:
            out.append(f"far below zero: {value:.3g} < floor {self.floor:g} (a critic worse than a constant)")
        if not math.isfinite(trimmed) or abs(value - trimmed) > max(0.25, 0.25 * abs(value)):
            out.append(f"unstable: leaving out the 1 % most extreme of {b_eval} held-out pairs moves the bound from "
                       f"{value:.3g} to {trimmed:.3g} (the critic extrapolates)")
        return out

    def _ceiling(self, b_eval: int) -> tuple[float, str] | None:
        return None

    def estimate(self, x: np.ndarray, y: np.ndarray) -> Estimate:
        x, y = check_pair(x, y, min_samples=8)
        previous = torch.get_num_threads()
        if self.threads is not None:
            torch.set_num_threads(int(self.threads))
        try:
            return self._estimate(x, y)
        finally:
            if self.threads is not None:
                torch.set_num_threads(previous)

    def _estimate(self, x: np.ndarray, y: np.ndarray) -> Estimate:
        n = x.shape[0]
        rng = np.random.default_rng(self.seed)
        perm = rng.permutation(n)
        n_train = int(round(self.train_fraction * n))
        n_train = min(max(n_train, 4), n - 4)
        tr, te = perm[:n_train], perm[n_train:]
        # the input map is fitted on the train half only
        (xtr, xte), (ytr, yte) = (_scale_inputs(a[tr], a[te], self.inputs) for a in (x, y))
        dev = torch.device(self.device)

        def t(a: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(a, dtype=torch.float32, device=dev)

        xtr, ytr, xte, yte = t(xtr), t(ytr), t(xte), t(yte)
        # enable_grad: the caller may hold torch.no_grad() (a trainer evaluating its model); the critic still trains
        with torch.random.fork_rng(devices=[]), torch.enable_grad():
            torch.manual_seed(self.seed)
            model = CRITICS[self.critic](x.shape[1], y.shape[1], self.hidden, self.layers, self.embed_dim).to(dev)
            opt = torch.optim.Adam(model.parameters(), lr=self.lr)
            gen = torch.Generator().manual_seed(self.seed)
            self._reset_state()
            # early stopping: a validation share of the train half picks the checkpoint (the held-out half is
            # never looked at before the final evaluation, so its value stays an honest estimate)
            n_val = int(round(self.val_fraction * n_train)) if self.val_fraction > 0 else 0
            n_fit = n_train - n_val
            bs = min(self.batch_size, n_fit)
            best_val, best_state, since_best = -math.inf, None, 0
            order, pos = torch.randperm(n_fit, generator=gen), 0
            for step in range(1, self.steps + 1):
                model.train()
                if pos + bs > n_fit:
                    order, pos = torch.randperm(n_fit, generator=gen), 0
                idx = order[pos : pos + bs].to(dev)
                pos += bs
                loss = -self.objective(model(xtr[idx], ytr[idx]))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if n_val and (step % self.eval_every == 0 or step == self.steps):
                    model.eval()
                    val, _ = self._evaluate(model, xtr[n_fit:], ytr[n_fit:])
                    if val > best_val:
                        best_val, since_best = val, 0
                        best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                    else:
                        since_best += 1
                        if since_best >= self.patience:
                            break
            if best_state is not None:
                model.load_state_dict(best_state)
            model.eval()
            held_out, b_eval, trimmed = self._evaluate(model, xte, yte, trimmed=True)
            train_value, _ = self._evaluate(model, xtr[:n_fit], ytr[:n_fit])
        upper = math.log(b_eval) if self.name == "infonce" else None
        est = Estimate(held_out, self.name, n, self.parameters(), upper_bound=upper, train_value=train_value)
        return flagged(est, *self._flags(held_out, train_value, trimmed, b_eval))


class InfoNCE(_CriticMI):
    """InfoNCE (CPC) bound; never exceeds log(eval batch), reported as ``upper_bound``."""

    name = "infonce"

    def bound(self, scores: torch.Tensor) -> torch.Tensor:
        return infonce_bound(scores)

    def _ceiling(self, b_eval: int) -> tuple[float, str]:
        return math.log(b_eval), "log B"


class NWJ(_CriticMI):
    """Nguyen-Wainwright-Jordan (f-divergence) bound."""

    name = "nwj"

    def bound(self, scores: torch.Tensor) -> torch.Tensor:
        return nwj_bound(scores)


class MINE(_CriticMI):
    """Donsker-Varadhan bound, trained with the moving-average gradient correction of Belghazi et al. (2018).

    The DV gradient has E[grad T e^T] / E[e^T]; a minibatch estimate of the denominator biases it, so the
    denominator is replaced by an exponential moving average (rate ``ma_rate``) of the minibatch E_q[e^T].
    """

    name = "mine"

    def __init__(self, ma_rate: float = 0.01, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 < ma_rate <= 1.0:
            raise ValueError(f"ma_rate: expected in (0, 1], got {ma_rate}")
        self.ma_rate = float(ma_rate)
        self._log_ma: float | None = None

    def parameters(self) -> dict:
        return {**super().parameters(), "ma_rate": self.ma_rate}

    def _reset_state(self) -> None:
        self._log_ma = None

    def bound(self, scores: torch.Tensor) -> torch.Tensor:
        return dv_bound(scores)

    def objective(self, scores: torch.Tensor) -> torch.Tensor:
        log_marg = _logmeanexp(_offdiag(scores))  # log of the minibatch E_q[e^T]
        lm = float(log_marg.detach())
        if self._log_ma is None:
            self._log_ma = lm
        else:  # moving average of E_q[e^T], kept in log space
            self._log_ma = float(np.logaddexp(np.log1p(-self.ma_rate) + self._log_ma, np.log(self.ma_rate) + lm))
        # surrogate whose gradient is grad E_p[T] - grad E_q[e^T] / ma
        return scores.diagonal().mean() - torch.exp(log_marg - self._log_ma)


class SMILE(_CriticMI):
    """SMILE (Song & Ermon 2020): critic trained with Jensen-Shannon, reported with the DV bound whose partition
    term uses the density ratio e^T clipped to [e^-clip, e^clip] (clip = tau = 5 by default)."""

    name = "smile"

    def __init__(self, clip: float = 5.0, **kwargs):
        super().__init__(**kwargs)
        if clip <= 0:
            raise ValueError(f"clip: expected > 0, got {clip}")
        self.clip = float(clip)

    def parameters(self) -> dict:
        return {**super().parameters(), "clip": self.clip}

    def bound(self, scores: torch.Tensor) -> torch.Tensor:
        return smile_bound(scores, self.clip)

    def _ceiling(self, b_eval: int) -> tuple[float, str]:
        return self.clip, "its clip"

    def objective(self, scores: torch.Tensor) -> torch.Tensor:
        return js_objective(scores)
