"""Losses of BMA-Memory, each a pure function of tensors (no module state, no distributed calls).

- L_pair   = InfoNCE(Z_v, Z_s; tau_l) + w_address * symKL(w_v, w_s) + w_recall * recall terms   (paired samples)
- L_unpair = cycle S -> I_pseudo -> S' pulled to S, and its image mirror                         (single samples)
- encoder objective: supervised cross-entropy, or label-free NT-Xent between two augmented views.

Targets of the memory terms are detached: the memory learns to store and recall the encoders' features, and the
encoders are shaped by their own objectives and L_pair's contrastive term, which keeps them from collapsing onto
whatever the memory can reproduce.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


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
