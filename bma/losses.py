"""Losses of BMA-Memory, each a pure function of tensors (no module state, no distributed calls), and the one
objective of a trial that sums them (``VariantLoss``, from ``build_loss``).

- L_pair   = InfoNCE(Z_v, Z_s; tau_l) + w_address * symKL(w_v, w_s) + w_recall * recall terms   (paired samples)
- L_unpair = cycle S -> I_pseudo -> S' pulled to S, and its image mirror                         (single samples)
- encoder objective: supervised cross-entropy, or label-free NT-Xent between two augmented views.

Targets of the memory terms are detached: the memory learns to store and recall the encoders' features, and the
encoders are shaped by their own objectives and L_pair's contrastive term, which keeps them from collapsing onto
whatever the memory can reproduce.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bma.config import LossConfig, TrialConfig


def info_nce(z_a: torch.Tensor, z_b: torch.Tensor, tau: float, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP's loss): row i of z_a and z_b are a pair, other rows are negatives.

    (B, p), (B, p) -> scalar in nats. log(B) - loss is the InfoNCE lower bound on I(Z_a; Z_b).
    With ``labels`` (B,), other rows of the same class are not used as negatives: class-matched pairs make them
    false negatives, and pushing them apart teaches the encoders the arbitrary instance pairing of the regime.
    """
    logits = F.normalize(z_a, dim=-1) @ F.normalize(z_b, dim=-1).T / tau  # (B, B)
    if labels is not None:
        same = labels[:, None] == labels[None, :]
        same.fill_diagonal_(False)
        logits = logits.masked_fill(same, float("-inf"))
    target = torch.arange(len(z_a), device=z_a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def symmetric_kl(p: torch.Tensor, q: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """0.5 (KL(p||q) + KL(q||p)), rows of (B, n) distributions, averaged over B. eps keeps sparse addresses finite."""
    p = (p + eps) / (1 + eps * p.shape[-1])
    q = (q + eps) / (1 + eps * q.shape[-1])
    return 0.5 * ((p * (p.log() - q.log())).sum(-1) + (q * (q.log() - p.log())).sum(-1)).mean()


def cosine_distance(a: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """mean(1 - cos(a, target)); target is detached (the memory chases the encoder, not the reverse)."""
    return (1 - F.cosine_similarity(a, target.detach(), dim=-1)).mean()


def pair_loss(out: dict[str, torch.Tensor], tau_l: float, w_address: float, w_recall: float,
              labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """L_pair on a batch of pairs: ``out`` holds z_v, z_s and, with memory, w_v, w_s, f_s_mem, f_v_mem, f_v, f_s.
    ``labels``: the pairs' classes, to drop same-class negatives from the contrastive term (see info_nce)."""
    terms = {"contrastive": info_nce(out["z_v"], out["z_s"], tau_l, labels)}
    if "w_v" in out:
        terms["address"] = symmetric_kl(out["w_v"], out["w_s"])
        terms["recall"] = 0.5 * (cosine_distance(out["f_s_mem"], out["f_s"]) + cosine_distance(out["f_v_mem"], out["f_v"]))
        terms["total"] = terms["contrastive"] + w_address * terms["address"] + w_recall * terms["recall"]
    else:
        terms["total"] = terms["contrastive"]
    return terms


def cycle_loss(start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
    """L_unpair for one modality: pull S' (end of S -> I_pseudo -> S') to S."""
    return cosine_distance(end, start)


def supervised_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, labels)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> torch.Tensor:
    """SimCLR's NT-Xent: views z1[i], z2[i] of one sample are positives; the other 2B-2 embeddings are negatives."""
    z = F.normalize(torch.cat([z1, z2]), dim=-1)  # (2B, p)
    sim = z @ z.T / tau
    sim = sim.masked_fill(torch.eye(len(z), dtype=torch.bool, device=z.device), float("-inf"))
    b = len(z1)
    target = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]).to(z.device)
    return F.cross_entropy(sim, target)


def slot_decorrelation(memory: torch.Tensor) -> torch.Tensor:
    """Mean squared off-diagonal cosine similarity of the slots (n, d): 0 when slots are orthogonal."""
    m = F.normalize(memory, dim=-1)
    gram = m @ m.T
    off = gram - torch.diag_embed(torch.diagonal(gram))
    n = len(memory)
    return (off**2).sum() / max(n * (n - 1), 1)


# -- improvement switches (stage 3 of the plan; each off by default) ---------------------------------------------


def variance_covariance(f: torch.Tensor, gamma: float = 1.0, eps: float = 1e-4) -> torch.Tensor:
    """VICReg's variance and covariance terms on a batch of features (B, d): a hinge keeping every dimension's std
    at >= gamma, plus the mean squared off-diagonal covariance. Keeps the features spread (high entropy), the
    failure mode it targets being collapse onto few directions, which a concentrated address H(W) follows."""
    f = f.float()
    std = torch.sqrt(f.var(dim=0) + eps)
    variance = F.relu(gamma - std).mean()
    centred = f - f.mean(dim=0)
    cov = centred.T @ centred / max(len(f) - 1, 1)  # (d, d)
    off = cov - torch.diag_embed(torch.diagonal(cov))
    return variance + (off**2).sum() / f.shape[1]


def info_nce_one_way(query: torch.Tensor, key: torch.Tensor, tau: float) -> torch.Tensor:
    """-(InfoNCE bound) up to log B: row i of query and key are positives, other rows negatives. (B, p), (B, p)."""
    logits = F.normalize(query, dim=-1) @ F.normalize(key, dim=-1).T / tau
    return F.cross_entropy(logits, torch.arange(len(query), device=query.device))


def address_cycle_loss(w_start: torch.Tensor, w_end: torch.Tensor) -> torch.Tensor:
    """L_unpair in address space: the end of the cycle must address the memory as its start did. The start's
    address is the target (detached), as the feature cycle's start is."""
    return symmetric_kl(w_end, w_start.detach())


def cycle_infonce(start: torch.Tensor, end: torch.Tensor, tau: float = 0.1) -> torch.Tensor:
    """Cheap live estimate of I(S; S') in nats on one batch: the InfoNCE lower bound log B - CE with a cosine
    critic (at most log B). What the LR controller monitors; no gradient."""
    with torch.no_grad():
        return math.log(len(start)) - info_nce_one_way(end.float(), start.float(), tau)


# -- one trial's objective -------------------------------------------------------------------------------------------

# What a loss can ask the model for beyond the single batches' f_v, f_s, the pair batch and the memories (see
# BMAMemory.forward_step, which computes only the groups asked for).
STEP_OUTPUTS = ("logits", "ssl", "cycles", "cycle_addresses", "infomax")


@dataclass(frozen=True)
class VariantLoss:
    """The training objective of one trial, built once from its config (``build_loss``) and called as
    ``loss(**model.forward_step(...), **targets)``: the model's outputs of one step and the step's labels as keyword
    arguments, in return {term: unweighted value, ..., "total": the weighted sum}. The term names are what the
    trainer logs as loss/<name>: encoder (every variant); pair, pair_contrastive, pair_address, pair_recall
    (paired_only, bma); unpair (bma); variance, infomax, slot_decorrelation (when their weights are on).

    ``pair`` is L_pair alone: the training term, and what the validation pairs are scored with in every variant."""

    cfg: LossConfig
    variant: str

    @property
    def uses_pairs(self) -> bool:
        return self.variant != "unimodal"

    @property
    def uses_cycles(self) -> bool:
        return self.variant == "bma"

    @property
    def has_memory(self) -> bool:
        return self.variant != "unimodal"

    @property
    def uses_infomax(self) -> bool:
        return self.cfg.w_infomax > 0 and self.has_memory

    @property
    def needs_views(self) -> bool:
        """Whether a step must hand the model a second view of each single sample (x_v2, x_s2)."""
        return self.cfg.encoder_objective == "contrastive" or self.uses_infomax

    @property
    def reads(self) -> frozenset[str]:
        """The groups of STEP_OUTPUTS this objective reads."""
        wanted = {"logits": self.cfg.encoder_objective == "supervised",
                  "ssl": self.cfg.encoder_objective == "contrastive",
                  "cycles": self.uses_cycles,
                  "cycle_addresses": self.uses_cycles and self.cfg.cycle_space == "address",
                  "infomax": self.uses_infomax}
        return frozenset(name for name in STEP_OUTPUTS if wanted[name])

    def __call__(
        self, *, f_v: torch.Tensor, f_s: torch.Tensor,
        y_v: torch.Tensor | None = None, y_s: torch.Tensor | None = None, y_pair: torch.Tensor | None = None,
        logits_v: torch.Tensor | None = None, logits_s: torch.Tensor | None = None,
        ssl_v: torch.Tensor | None = None, ssl_v2: torch.Tensor | None = None,
        ssl_s: torch.Tensor | None = None, ssl_s2: torch.Tensor | None = None,
        pairs: dict[str, torch.Tensor] | None = None,
        s_prime: torch.Tensor | None = None, v_prime: torch.Tensor | None = None,
        w_s: torch.Tensor | None = None, w_s_prime: torch.Tensor | None = None,
        w_v: torch.Tensor | None = None, w_v_prime: torch.Tensor | None = None,
        infomax_v: torch.Tensor | None = None, infomax_key_v: torch.Tensor | None = None,
        infomax_s: torch.Tensor | None = None, infomax_key_s: torch.Tensor | None = None,
        infomax_pair_v: torch.Tensor | None = None, infomax_pair_s: torch.Tensor | None = None,
        memory_image: torch.Tensor | None = None, memory_sound: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Names as BMAMemory.forward_step gives them (shapes there); y_v, y_s: the single batches' classes (B,),
        y_pair: the pairs' (k,), each None in a label-free trial. The total is summed in a fixed order (encoder,
        pair, unpair, variance, infomax, slot_decorrelation), so equal outputs give an equal total, bit for bit."""
        lo = self.cfg
        terms = {"encoder": self.encoder(f_v, logits_v, logits_s, y_v, y_s, ssl_v, ssl_v2, ssl_s, ssl_s2)}
        total = lo.w_encoder * terms["encoder"]
        if self.uses_pairs:
            pair = self.pair(pairs, y_pair)
            terms["pair"] = pair["total"]
            terms.update({f"pair_{name}": v for name, v in pair.items() if name != "total"})
            total = total + lo.w_pair * pair["total"]
        if self.uses_cycles:
            if lo.cycle_space == "address":
                terms["unpair"] = 0.5 * (address_cycle_loss(w_s, w_s_prime) + address_cycle_loss(w_v, w_v_prime))
            else:
                terms["unpair"] = 0.5 * (cycle_loss(f_s, s_prime) + cycle_loss(f_v, v_prime))
            total = total + lo.w_unpair * terms["unpair"]
        improvements = self.improvement_terms(f_v, f_s, pairs, infomax_v, infomax_key_v, infomax_s, infomax_key_s,
                                              infomax_pair_v, infomax_pair_s)
        for name, term in improvements.items():
            terms[name] = term
            total = total + getattr(lo, f"w_{name}") * term
        if self.has_memory and lo.w_slot_decorrelation > 0:
            terms["slot_decorrelation"] = 0.5 * (slot_decorrelation(memory_image) + slot_decorrelation(memory_sound))
            total = total + lo.w_slot_decorrelation * terms["slot_decorrelation"]
        terms["total"] = total
        return terms

    def encoder(self, f_v, logits_v, logits_s, y_v, y_s, ssl_v, ssl_v2, ssl_s, ssl_s2) -> torch.Tensor:
        """The in-modality objective on the single batches (loss.encoder_objective)."""
        objective = self.cfg.encoder_objective
        if objective == "supervised":
            return 0.5 * (supervised_loss(logits_v, y_v) + supervised_loss(logits_s, y_s))
        if objective == "contrastive":
            tau = self.cfg.tau_encoder
            return 0.5 * (nt_xent(ssl_v, ssl_v2, tau) + nt_xent(ssl_s, ssl_s2, tau))
        return torch.zeros((), device=f_v.device)

    def pair(self, out: dict[str, torch.Tensor], y_pair: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """L_pair on a batch of pairs (``out`` keyed as BMAMemory.forward returns it); the pairs' classes mask
        same-class negatives with loss.pair_negatives: other_class, and are ignored with all."""
        labels = y_pair if self.cfg.pair_negatives == "other_class" else None
        return pair_loss(out, self.cfg.tau_l, self.cfg.w_address, self.cfg.w_recall, labels)

    def improvement_terms(self, f_v, f_s, pairs=None, infomax_v=None, infomax_key_v=None, infomax_s=None,
                          infomax_key_s=None, infomax_pair_v=None, infomax_pair_s=None) -> dict[str, torch.Tensor]:
        """The stage-3 loss switches that are on (weights > 0): {name: unweighted term}."""
        lo, terms = self.cfg, {}
        if lo.w_variance > 0:
            terms["variance"] = 0.5 * (variance_covariance(f_v) + variance_covariance(f_s))
        if self.uses_infomax:
            # I(h_v; X_v): h_v of one view against the other view's f_v (InfoNCE); I(h_v; X_true_s): h_v of a pair
            # against its sound's z_s. The sound side mirrors both.
            tau = lo.tau_encoder
            view = 0.5 * (info_nce_one_way(infomax_v, infomax_key_v, tau)
                          + info_nce_one_way(infomax_s, infomax_key_s, tau))
            partner = torch.zeros((), device=f_v.device)
            if infomax_pair_v is not None:  # absent for a single pair: no negative to contrast it with
                partner = 0.5 * (info_nce_one_way(infomax_pair_v, pairs["z_s"], lo.tau_l)
                                 + info_nce_one_way(infomax_pair_s, pairs["z_v"], lo.tau_l))
            terms["infomax"] = view + partner
        return terms


def build_loss(cfg: TrialConfig) -> VariantLoss:
    """The objective of a trial: its loss settings, for its variant."""
    return VariantLoss(cfg.loss, cfg.model.variant)
