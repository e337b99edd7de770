"""Evaluation on the official test splits: linear probes, cross-modal retrieval, association accuracy.

Definitions (one name, one meaning; see docs/metrics.md):
- ``acc/<modality>_probe_f`` / ``_probe_h``: accuracy of a multinomial logistic-regression probe fitted on the
  frozen train-set features f (or h = [f; f_mem]) of the regime's training samples, scored on the test split.
- ``retrieval/i2s_r{1,5}``: class-level recall@K in the contrastive space: an image query (Z_v) counts as a hit when
  one of its K nearest test sounds (Z_s, cosine) has the image's class. Instance-level recall is meaningless for
  class-matched pairs, so the class is the unit. ``retrieval/i2s_mem_r{1,5}``: the same in memory space (the
  recalled f_s,mem against the sounds' f_s). s2i mirrors both.
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


def fit_probe(x: np.ndarray, y: np.ndarray, max_iter: int = 200):
    """Standardise, then multinomial logistic regression (L-BFGS, L2, C=1): deterministic for fixed inputs."""
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter, C=1.0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        probe.fit(x, y)
    return probe


def probe_accuracy(train_x, train_y, test_x, test_y, max_iter: int = 200) -> float:
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
    x_snd_test, y_snd_test, x_img_pair, x_snd_pair, y_pair (labels in the common label space)."""
    img_tr = embed(model, split["x_img_train"], "image", device)
    snd_tr = embed(model, split["x_snd_train"], "sound", device)
    img_te = embed(model, split["x_img_test"], "image", device)
    snd_te = embed(model, split["x_snd_test"], "sound", device)
    y = {k: split[k].numpy() for k in ("y_img_train", "y_snd_train", "y_img_test", "y_snd_test", "y_pair")}
    m: dict[str, float] = {}
    image_probe = fit_probe(img_tr["f_v"], y["y_img_train"], max_iter)
    sound_probe = fit_probe(snd_tr["f_s"], y["y_snd_train"], max_iter)
    m["acc/image_probe_f"] = float((image_probe.predict(img_te["f_v"]) == y["y_img_test"]).mean())
    m["acc/sound_probe_f"] = float((sound_probe.predict(snd_te["f_s"]) == y["y_snd_test"]).mean())
    if model.has_memory:
        m["acc/image_probe_h"] = probe_accuracy(img_tr["h_v"], y["y_img_train"], img_te["h_v"], y["y_img_test"], max_iter)
        m["acc/sound_probe_h"] = probe_accuracy(snd_tr["h_s"], y["y_snd_train"], snd_te["h_s"], y["y_snd_test"], max_iter)
        m["assoc/i2s_acc"] = association_accuracy(snd_tr["f_s"], y["y_snd_train"], img_te["f_s_mem"], y["y_img_test"])
        m["assoc/s2i_acc"] = association_accuracy(img_tr["f_v"], y["y_img_train"], snd_te["f_v_mem"], y["y_snd_test"])
    else:  # h = f without a memory: same probe, reported under both names so tables line up across variants
        m["acc/image_probe_h"] = m["acc/image_probe_f"]
        m["acc/sound_probe_h"] = m["acc/sound_probe_f"]

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
