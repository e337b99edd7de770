"""Evaluation on the official test splits: linear probes, cross-modal retrieval, association accuracy.

Definitions (one name, one meaning; each family is registered with its direction and split in bma/record.py):
- ``acc/<modality>_probe_f`` / ``_probe_h``: accuracy of a multinomial logistic-regression probe fitted on the
  frozen train-set features f (or h = [f; f_mem]) of the regime's training samples, scored on the test split.
- ``retrieval/i2s_r{1,5}``: class-level recall@K in the contrastive space: an image query (Z_v) counts as a hit when
  one of its K nearest test sounds (Z_s, cosine) has the image's class. Instance-level recall is meaningless for
  class-matched pairs, so the class is the unit. ``retrieval/i2s_mem_r{1,5}``: the same in memory space (the
  recalled f_s,mem against the sounds' f_s). s2i mirrors both.
- ``acc/<modality>_probe_<f|h>/k<K>``: the same probe fitted on K labelled samples per class only (the label
  budget), the mean over eval.label_draws class-balanced labelled draws (fixed per seed, nested in K within a draw,
  outside the regime's pairs by default: bma.trial_data.label_pools); ``acc_sd/...`` is the sd across the draws.
- ``xdomain/<domain>/acc/...``, ``xdomain/<domain>/assoc/s2i_acc``: probes fitted in the training domain, scored on
  another domain's test clips (a held-out speaker, noisy audio; see bma.data.domains).
- ``assoc/i2s_acc``: does f_s,mem recalled from each test image carry the image's class? Read out by the nearest
  class centroid (cosine) of the train sounds' own f_s. s2i mirrors it.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from bma.config import EvalConfig


@torch.no_grad()
def embed(model, x: torch.Tensor, modality: str, device: torch.device, batch_size: int = 512) -> dict[str, np.ndarray]:
    """Run one modality through the model in eval mode; numpy float32 arrays keyed like the model's output."""
    was_training = model.training
    model.eval()
    chunks: dict[str, list[torch.Tensor]] = {}
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size].to(device, non_blocking=True)
        out = model(x_v=xb) if modality == "image" else model(x_s=xb)
        for k, v in out.items():
            chunks.setdefault(k, []).append(v.float().cpu())
    model.train(was_training)
    return {k: torch.cat(v).numpy() for k, v in chunks.items()}


def fit_probe(x: np.ndarray, y: np.ndarray, max_iter: int = EvalConfig.probe_max_iter):
    """Standardise, then multinomial logistic regression (L-BFGS, L2, C=1): deterministic for fixed inputs.

    One BLAS thread: a probe's matrices are small (a few hundred samples), and BLAS's threads cost more than they
    save there (38 ms CPU per 200-sample fit with 2 OpenBLAS threads against 6 ms with one, idle machine), which
    is what keeps eval.label_draws' repeated fits cheap next to training (benchmarks/label_draws.py)."""
    from threadpoolctl import threadpool_limits

    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter, C=1.0))
    with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"):
        warnings.simplefilter("ignore", ConvergenceWarning)
        probe.fit(x, y)
    return probe


def probe_accuracy(train_x, train_y, test_x, test_y, max_iter: int = EvalConfig.probe_max_iter) -> float:
    return float((fit_probe(train_x, train_y, max_iter).predict(test_x) == test_y).mean())


def association_accuracy(partner_f: np.ndarray, partner_y: np.ndarray, recalled: np.ndarray, query_y: np.ndarray) -> float:
    """Does a recalled feature carry its query's class? Nearest class centroid of the partner modality's own train
    features, by cosine: recall is trained on direction (cosine), so the read-out must ignore the norm."""
    unit = lambda a: a / (np.linalg.norm(a, axis=1, keepdims=True) + 1e-12)  # noqa: E731
    classes = np.unique(partner_y)
    centroids = unit(np.stack([unit(partner_f[partner_y == c]).mean(0) for c in classes]))
    predicted = classes[np.argmax(unit(recalled) @ centroids.T, axis=1)]
    return float((predicted == query_y).mean())


def class_recall_at_k(query: np.ndarray, gallery: np.ndarray, query_y: np.ndarray, gallery_y: np.ndarray, ks=(1, 5)) -> dict[int, float]:
    """Fraction of queries with a same-class item among their k nearest gallery items (cosine similarity)."""
    q = query / (np.linalg.norm(query, axis=1, keepdims=True) + 1e-12)
    g = gallery / (np.linalg.norm(gallery, axis=1, keepdims=True) + 1e-12)
    order = np.argsort(-(q @ g.T), axis=1, kind="stable")[:, : max(ks)]  # (Q, K)
    hits = gallery_y[order] == query_y[:, None]
    return {k: float(hits[:, :k].any(axis=1).mean()) for k in ks}


def evaluate(model, split: dict, max_iter: int, device: torch.device) -> dict[str, float]:
    """``split`` holds tensors x_img_train, y_img_train, x_snd_train, y_snd_train, x_img_test, y_img_test,
    x_snd_test, y_snd_test, x_img_pair, x_snd_pair, y_pair (labels in the common label space) and optionally
    the label-budget sets (x_img_budget, y_img_budget, img_budget_masks {K: mask}, and the snd mirror) and
    sound_domains {name: (x, y)}, test domains other than the training one."""
    img_tr = embed(model, split["x_img_train"], "image", device)
    snd_tr = embed(model, split["x_snd_train"], "sound", device)
    img_te = embed(model, split["x_img_test"], "image", device)
    snd_te = embed(model, split["x_snd_test"], "sound", device)
    y = {k: split[k].numpy() for k in ("y_img_train", "y_snd_train", "y_img_test", "y_snd_test", "y_pair")}
    domains = {name: (embed(model, x, "sound", device), yd.numpy()) for name, (x, yd) in split.get("sound_domains", {}).items()}
    image_domains = {name: (embed(model, x, "image", device), yd.numpy())
                     for name, (x, yd) in split.get("image_domains", {}).items()}
    reps = ("f", "h") if model.has_memory else ("f",)
    m: dict[str, float] = {}
    metrics = m

    def score(probe, x, y_true) -> float:
        return float((probe.predict(x) == y_true).mean())

    def probes(side: str, train: dict, y_train: np.ndarray, suffix: str = "", into: dict | None = None) -> None:
        """Fit the f and h probes of one modality and score them in-domain and on every test domain (into ``m``,
        or ``into``)."""
        m = metrics if into is None else into
        key = "v" if side == "image" else "s"
        test, y_test = (img_te, y["y_img_test"]) if side == "image" else (snd_te, y["y_snd_test"])
        side_domains = domains if side == "sound" else image_domains
        for rep in reps:
            probe = fit_probe(train[f"{rep}_{key}"], y_train, max_iter)
            m[f"acc/{side}_probe_{rep}{suffix}"] = score(probe, test[f"{rep}_{key}"], y_test)
            for name, (emb, yd) in side_domains.items():
                m[f"xdomain/{name}/acc/{side}_probe_{rep}{suffix}"] = score(probe, emb[f"{rep}_{key}"], yd)
        if not model.has_memory:  # h = f without a memory: reported under both names so tables line up
            m[f"acc/{side}_probe_h{suffix}"] = m[f"acc/{side}_probe_f{suffix}"]
            for name in side_domains:
                m[f"xdomain/{name}/acc/{side}_probe_h{suffix}"] = m[f"xdomain/{name}/acc/{side}_probe_f{suffix}"]

    probes("image", img_tr, y["y_img_train"])
    probes("sound", snd_tr, y["y_snd_train"])
    # Label budgets: the same probes fitted on K labelled samples per class, once per labelled draw; the metric is
    # the mean over draws (acc/<probe>/k<K>), the draws' sd its own metric (acc_sd/<probe>/k<K>).
    for side, tag in (("image", "img"), ("sound", "snd")):
        if f"x_{tag}_budget" not in split:
            continue
        emb = embed(model, split[f"x_{tag}_budget"], side, device)
        y_budget = split[f"y_{tag}_budget"].numpy()
        for k, masks in split[f"{tag}_budget_masks"].items():
            per_draw: list[dict[str, float]] = []
            for mask in masks:
                m_draw: dict[str, float] = {}
                probes(side, {name: v[mask] for name, v in emb.items()}, y_budget[mask], suffix=f"/k{k}", into=m_draw)
                per_draw.append(m_draw)
            for name in per_draw[0]:
                values = np.array([d[name] for d in per_draw])
                m[name] = float(values.mean())
                m[name.replace("acc/", "acc_sd/", 1)] = float(values.std(ddof=1)) if len(values) > 1 else 0.0

    if model.has_memory:
        m["assoc/i2s_acc"] = association_accuracy(snd_tr["f_s"], y["y_snd_train"], img_te["f_s_mem"], y["y_img_test"])
        m["assoc/s2i_acc"] = association_accuracy(img_tr["f_v"], y["y_img_train"], snd_te["f_v_mem"], y["y_snd_test"])
        for name, (emb, yd) in domains.items():
            m[f"xdomain/{name}/assoc/s2i_acc"] = association_accuracy(img_tr["f_v"], y["y_img_train"], emb["f_v_mem"], yd)
        for name, (emb, yd) in image_domains.items():
            m[f"xdomain/{name}/assoc/i2s_acc"] = association_accuracy(snd_tr["f_s"], y["y_snd_train"], emb["f_s_mem"], yd)

    img_pair = embed(model, split["x_img_pair"], "image", device)
    snd_pair = embed(model, split["x_snd_pair"], "sound", device)
    yp = y["y_pair"]
    for direction, (q, g) in {"i2s": (img_pair["z_v"], snd_pair["z_s"]), "s2i": (snd_pair["z_s"], img_pair["z_v"])}.items():
        for k, v in class_recall_at_k(q, g, yp, yp).items():
            m[f"retrieval/{direction}_r{k}"] = v
    if model.has_memory:
        mem = {"i2s": (img_pair["f_s_mem"], snd_pair["f_s"]), "s2i": (snd_pair["f_v_mem"], img_pair["f_v"])}
        for direction, (q, g) in mem.items():
            for k, v in class_recall_at_k(q, g, yp, yp).items():
                m[f"retrieval/{direction}_mem_r{k}"] = v
    return m
