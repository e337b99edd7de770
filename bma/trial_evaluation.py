"""A trial's evaluation rounds wired to its tensors: the validation pair loss and the information probes.

The test-split evaluation itself (probes, retrieval, association) is bma.evaluation's ``evaluate``; the estimators
and the quantities of the information plane are bma.info.probes'. This module hands them the trial's samples.
"""

from __future__ import annotations

import torch

from bma.config import TrialConfig
from bma.evaluation import embed
from bma.info.probes import ProbeInputs, compute_probes
from bma.losses import VariantLoss
from bma.model import BMAMemory
from bma.trial_data import TrialTensors


@torch.no_grad()
def validation_losses(loss: VariantLoss, model: BMAMemory, t: TrialTensors) -> dict[str, float]:
    """L_pair on the validation pairs (eval mode), by the training objective's own ``pair``: tracks paired
    generalisation, also for the unimodal baseline."""
    was = model.training
    model.eval()
    xv, xs, yv = t.val  # yv is None in a label-free trial
    pair = loss.pair(model(x_v=xv, x_s=xs), yv)
    model.train(was)
    return {"loss/val_pair": float(pair["total"]), "loss/val_pair_contrastive": float(pair["contrastive"])}


def information_probes(cfg: TrialConfig, model: BMAMemory, t: TrialTensors, device: torch.device) -> dict[str, float]:
    """Table 1 quantities on held-out class-matched test pairs (at most eval.info_samples of them)."""
    n = min(cfg.eval.info_samples, len(t.eval_split["y_pair"]))
    img = embed(model, t.eval_split["x_img_pair"][:n], "image", device)
    snd = embed(model, t.eval_split["x_snd_pair"][:n], "sound", device)
    s_cycle = v_cycle = None
    if model.has_memory:
        was = model.training
        model.eval()
        with torch.no_grad():  # the cycles only: neural critics in compute_probes train with gradients
            f_s = torch.as_tensor(snd["f_s"], device=device)
            f_v = torch.as_tensor(img["f_v"], device=device)
            s_cycle = (snd["f_s"], *(a.float().cpu().numpy() for a in model.sound_cycle(f_s)))
            v_cycle = (img["f_v"], *(a.float().cpu().numpy() for a in model.image_cycle(f_v)))
        model.train(was)
    inputs = ProbeInputs(
        f_v=img["f_v"], f_s=snd["f_s"],
        f_s_mem=img.get("f_s_mem"), f_v_mem=snd.get("f_v_mem"),
        w_v=img.get("w_v"), w_s=snd.get("w_s"),
        h_v=img["h_v"], h_s=snd["h_s"], z_v=img["z_v"], z_s=snd["z_s"],
        y=t.eval_split["y_pair"][:n].numpy(),
        s_cycle=s_cycle, v_cycle=v_cycle, has_memory=model.has_memory,
    )
    return compute_probes(inputs, estimators=tuple(cfg.eval.info_estimators), seed=cfg.regime.seed,
                          max_samples=cfg.eval.info_samples, probe_max_iter=cfg.eval.probe_max_iter)
