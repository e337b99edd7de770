"""BMA-Memory: two encoders, two slot memories linked by their shared slot index, key-value switching.

Read top to bottom: encoders, addressing, the memory, then the model that wires them. The model computes
representations only; losses live in bma.losses and take the model's output dict as arguments.

Notation (DESIGN.md): f_v = E_v(x_v), f_s = E_s(x_s); w_v = addr(f_v, M_v); f_s,mem = w_v M_s; h_v = [f_v; f_s,mem].
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from entmax import entmax15, sparsemax

from bma import rng
from bma.config import ModelConfig


class ConvEncoder(nn.Module):
    """Small CNN for 28x28 / 32x32 images and for log-mel spectrograms (1, n_mels, T); any input size works."""

    def __init__(self, in_channels: int, out_dim: int, width: int = 16, stride: int = 1):
        super().__init__()

        def block(cin: int, cout: int, s: int = 1) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=s, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

        self.features = nn.Sequential(
            block(in_channels, width, stride), nn.MaxPool2d(2),
            block(width, 2 * width), nn.MaxPool2d(2),
            block(2 * width, 4 * width),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Linear(4 * width, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, out_dim)
        return self.head(self.features(x))


def resnet18_encoder(in_channels: int, out_dim: int) -> nn.Module:
    """torchvision ResNet-18, randomly initialised (offline machines load no weights), stem adapted to small inputs."""
    net = torchvision.models.resnet18(weights=None, num_classes=out_dim)
    net.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
    net.maxpool = nn.Identity()  # keep resolution on 28-32 px inputs
    return net


def address(f: torch.Tensor, memory: torch.Tensor, tau: float, mode: str = "softmax", top_k: int = 8) -> torch.Tensor:
    """Address distribution over the n slots: normalise(cos(f, m_r) / tau). (B, d), (n, d) -> (B, n), rows sum to 1."""
    logits = F.normalize(f, dim=-1) @ F.normalize(memory, dim=-1).T / tau  # (B, n)
    if mode == "softmax":
        return logits.softmax(dim=-1)
    if mode == "sparsemax":
        return sparsemax(logits, dim=-1)
    if mode == "entmax15":
        return entmax15(logits, dim=-1)
    if mode == "topk":
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        return logits.masked_fill(logits < kth, float("-inf")).softmax(dim=-1)
    raise ValueError(f"model.addressing: unknown mode {mode!r}")


class BMAMemory(nn.Module):
    """Image and sound encoders, projection heads for L_pair, class heads for the supervised encoder objective,
    and the two slot memories M_v, M_s (n x d each); slot r of M_v belongs with slot r of M_s."""

    def __init__(self, cfg: ModelConfig, image_channels: int, num_classes: int, seed: int | None = None):
        """``seed``: each module's initial weights come from its own generator of (seed, "init/<module>")
        (bma.rng), so the encoders start the same in every variant and every memory size of a seed; None draws
        them from torch's global generator in construction order."""
        super().__init__()
        self.cfg = cfg
        d, p = cfg.feature_dim, cfg.projection_dim
        w = cfg.encoder_width

        def init(name: str, build):
            if seed is None:
                return build()
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(rng.torch_seed(seed, f"init/{name}"))
                return build()

        self.image_encoder = init("image_encoder", lambda: ConvEncoder(image_channels, d, w) if cfg.image_encoder == "cnn"
                                  else resnet18_encoder(image_channels, d))
        # Spectrograms (40 x 126 by default) are 6x the pixels of a digit: a strided first layer evens the cost.
        self.sound_encoder = init("sound_encoder", lambda: ConvEncoder(1, d, w, stride=2))
        head = lambda: nn.Sequential(nn.Linear(d, d), nn.ReLU(inplace=True), nn.Linear(d, p))  # noqa: E731
        self.project_image = init("project_image", head)
        self.project_sound = init("project_sound", head)
        self.classify_image = init("classify_image", lambda: nn.Linear(d, num_classes))
        self.classify_sound = init("classify_sound", lambda: nn.Linear(d, num_classes))
        # Heads of the label-free encoder objective (SimCLR-style), kept apart from the cross-modal projections.
        self.ssl_image = init("ssl_image", head)
        self.ssl_sound = init("ssl_sound", head)
        self.has_memory = cfg.variant != "unimodal"
        # Slots start small and random: cosine addressing ignores their norm, recall starts near zero.
        self.memory_image = init("memory_image", lambda: nn.Parameter(0.1 * torch.randn(cfg.memory_slots, d)))  # M_v
        self.memory_sound = init("memory_sound", lambda: nn.Parameter(0.1 * torch.randn(cfg.memory_slots, d)))  # M_s
        self.tau_m = cfg.tau_m  # set by the trainer each epoch when a schedule is configured
        # Critics of the information-maximising loss (loss.w_infomax): h (2d) and its targets meet in p dims.
        self.infomax_image = init("infomax_image", lambda: nn.Linear(2 * d, p))
        self.infomax_sound = init("infomax_sound", lambda: nn.Linear(2 * d, p))
        # Running slot usage (mean address, EMA over steps) of each memory: what the reseed rule reads. Buffers,
        # so checkpoints carry them and a resumed trial re-seeds the same slots.
        self.register_buffer("usage_image", torch.full((cfg.memory_slots,), 1.0 / cfg.memory_slots))
        self.register_buffer("usage_sound", torch.full((cfg.memory_slots,), 1.0 / cfg.memory_slots))

    # -- encoders ---------------------------------------------------------------------------------------------------
    def encode_image(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, d)
        return self.image_encoder(x)

    def encode_sound(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, n_mels, T) -> (B, d)
        return self.sound_encoder(x)

    # -- memory -----------------------------------------------------------------------------------------------------
    def recall(self, f: torch.Tensor, key: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Key-value switching: address the ``key`` modality's memory with f, read the other memory.

        key="image": w_v = addr(f_v, M_v), returns (w_v, f_s,mem = w_v M_s); key="sound" mirrors it.
        """
        key_mem, value_mem = (
            (self.memory_image, self.memory_sound) if key == "image" else (self.memory_sound, self.memory_image)
        )
        w = address(f, key_mem, self.tau_m, self.cfg.addressing, self.cfg.top_k)  # (B, n)
        return w, w @ value_mem  # (B, n), (B, d)

    def represent_image(self, f_v: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {"f_v": f_v, "z_v": self.project_image(f_v), "logits_v": self.classify_image(f_v)}
        if self.has_memory:
            w_v, f_s_mem = self.recall(f_v, "image")
            out.update(w_v=w_v, f_s_mem=f_s_mem, h_v=torch.cat([f_v, f_s_mem], dim=-1))  # h_v: (B, 2d)
        else:
            out["h_v"] = f_v
        return out

    def represent_sound(self, f_s: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {"f_s": f_s, "z_s": self.project_sound(f_s), "logits_s": self.classify_sound(f_s)}
        if self.has_memory:
            w_s, f_v_mem = self.recall(f_s, "sound")
            out.update(w_s=w_s, f_v_mem=f_v_mem, h_s=torch.cat([f_s, f_v_mem], dim=-1))
        else:
            out["h_s"] = f_s
        return out

    def forward(self, x_v: torch.Tensor | None = None, x_s: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Whatever modalities are given; keys are the losses' argument names (f_v, w_v, f_s_mem, h_v, z_v, ...)."""
        out: dict[str, torch.Tensor] = {}
        if x_v is not None:
            out.update(self.represent_image(self.encode_image(x_v)))
        if x_s is not None:
            out.update(self.represent_sound(self.encode_sound(x_s)))
        return out

    def forward_step(self, x_v: torch.Tensor, x_s: torch.Tensor, n_pairs: int = 0, x_v2: torch.Tensor | None = None,
                     x_s2: torch.Tensor | None = None, reads: frozenset[str] = frozenset()) -> dict:
        """One training step's outputs, named as bma.losses.VariantLoss takes them.

        ``x_v``, ``x_s``: (k + B, ...) inputs whose first k = ``n_pairs`` rows are pairs and whose other B rows are
        single samples, encoded in one pass; ``x_v2``, ``x_s2``: a second view of each single sample (B, ...), for the
        groups that need one. Always returned: the singles' ``f_v``, ``f_s`` (B, d); with pairs, ``pairs``, the pair
        rows' outputs keyed as ``forward`` gives them; with a memory, ``memory_image``, ``memory_sound`` (n, d).
        ``reads`` (groups of bma.losses.STEP_OUTPUTS) adds, computed in this order:
        - logits: the class heads on the singles, ``logits_v``, ``logits_s`` (B, K);
        - ssl: the label-free heads on the singles and on their views, ``ssl_v``, ``ssl_v2``, ``ssl_s``, ``ssl_s2``
          (B, p);
        - cycles: ``s_prime``, the end of S -> I_pseudo -> S' from each single sound, and ``v_prime``, the image mirror;
        - cycle_addresses: the addresses of the cycles' starts and ends, ``w_s``, ``w_s_prime``, ``w_v``, ``w_v_prime``;
        - infomax: see ``infomax_outputs``.
        """
        f_v, f_s = self.encode_image(x_v), self.encode_sound(x_s)  # (k + B, d)
        k = n_pairs
        fv, fs = f_v[k:], f_s[k:]
        out: dict = {"f_v": fv, "f_s": fs}
        f_v2 = f_s2 = None
        if "logits" in reads:
            out.update(logits_v=self.classify_image(fv), logits_s=self.classify_sound(fs))
        if "ssl" in reads:
            f_v2, f_s2 = self.encode_image(x_v2), self.encode_sound(x_s2)
            out.update(ssl_v=self.ssl_image(fv), ssl_v2=self.ssl_image(f_v2), ssl_s=self.ssl_sound(fs),
                       ssl_s2=self.ssl_sound(f_s2))
        if k:
            out["pairs"] = {**self.represent_image(f_v[:k]), **self.represent_sound(f_s[:k])}
        if "cycles" in reads:
            out["s_prime"] = self.sound_cycle(fs)[1]
            out["v_prime"] = self.image_cycle(fv)[1]
        if "cycle_addresses" in reads:
            out.update(w_s=self.recall(fs, "sound")[0], w_s_prime=self.recall(out["s_prime"], "sound")[0],
                       w_v=self.recall(fv, "image")[0], w_v_prime=self.recall(out["v_prime"], "image")[0])
        if "infomax" in reads:
            if f_v2 is None:
                f_v2, f_s2 = self.encode_image(x_v2), self.encode_sound(x_s2)
            out.update(self.infomax_outputs(fv, fs, f_v2, f_s2, out.get("pairs")))
        if self.has_memory:
            out.update(memory_image=self.memory_image, memory_sound=self.memory_sound)
        return out

    def infomax_outputs(self, f_v: torch.Tensor, f_s: torch.Tensor, f_v2: torch.Tensor, f_s2: torch.Tensor,
                        pairs: dict | None = None) -> dict[str, torch.Tensor]:
        """What the information-maximising loss reads: the critics on the singles' h, ``infomax_v``, ``infomax_s``
        (B, p), against their targets, the label-free heads on the other view's features, ``infomax_key_v``,
        ``infomax_key_s``; and with more than one pair, the critics on the pairs' h, ``infomax_pair_v``,
        ``infomax_pair_s`` (k, p), whose targets are the pairs' z. Each head runs anew here, even where another
        output holds the same value (ssl_v2, the cycle's first recall): sharing the node would sum both terms'
        gradients before the head's backward pass, a different float rounding, so a trial would no longer repeat
        the numbers recorded before the loss object existed."""
        h_v = torch.cat([f_v, self.recall(f_v, "image")[1]], dim=-1)  # (B, 2d)
        h_s = torch.cat([f_s, self.recall(f_s, "sound")[1]], dim=-1)
        out = {"infomax_v": self.infomax_image(h_v), "infomax_key_v": self.ssl_image(f_v2),
               "infomax_s": self.infomax_sound(h_s), "infomax_key_s": self.ssl_sound(f_s2)}
        if pairs is not None and len(pairs["h_v"]) > 1:
            out.update(infomax_pair_v=self.infomax_image(pairs["h_v"]), infomax_pair_s=self.infomax_sound(pairs["h_s"]))
        return out

    @torch.no_grad()
    def track_usage(self, w_v: torch.Tensor | None, w_s: torch.Tensor | None, momentum: float = 0.99) -> None:
        """EMA of the mean address of each memory, (B, n) batches; an explicit step of the training loop."""
        for usage, w in ((self.usage_image, w_v), (self.usage_sound, w_s)):
            if w is not None and len(w):
                usage.mul_(momentum).add_((1 - momentum) * w.float().mean(0))

    @torch.no_grad()
    def reseed_dead_slots(self, f_v: torch.Tensor, f_s: torch.Tensor, dead_usage: float,
                          generator: torch.Generator | None = None) -> torch.Tensor:
        """The changed memory update rule: a slot whose usage (in either memory) fell below dead_usage / n is
        re-seeded from a recent pair, slot r of M_v <- f_v of pair i, slot r of M_s <- f_s of the same pair, so
        the revived slots are associated from the start. (B, d) paired features -> indices of re-seeded slots."""
        n = self.cfg.memory_slots
        dead = torch.nonzero((self.usage_image < dead_usage / n) | (self.usage_sound < dead_usage / n)).flatten()
        if len(dead) == 0 or len(f_v) == 0:
            return dead
        pick = torch.randint(len(f_v), (len(dead),), generator=generator).to(f_v.device)
        self.memory_image[dead] = f_v[pick].to(self.memory_image.dtype)
        self.memory_sound[dead] = f_s[pick].to(self.memory_sound.dtype)
        self.usage_image[dead] = 1.0 / n
        self.usage_sound[dead] = 1.0 / n
        return dead

    @torch.no_grad()
    def reseed_dead_slots_unpaired(self, f_v: torch.Tensor, f_s: torch.Tensor, dead_usage: float,
                                   generator: torch.Generator | None = None) -> torch.Tensor:
        """The same rule, fed by the single (unpaired) batches, ``model.slot_reseed_source: unpaired``. Half the dead
        slots (the even positions of the dead list) take an unpaired image feature in M_v and, in M_s, what the
        memory recalls for it (V -> S_pseudo); the other half the mirror (an unpaired sound in M_s, its recalled
        image in M_v). Both recalls are read before any slot is written, so a revived slot is associated through
        the memory's current mapping rather than through one of few pairs. (B, d) features -> re-seeded indices."""
        n = self.cfg.memory_slots
        dead = torch.nonzero((self.usage_image < dead_usage / n) | (self.usage_sound < dead_usage / n)).flatten()
        if len(dead) == 0 or len(f_v) == 0 or len(f_s) == 0:
            return dead
        from_image, from_sound = dead[0::2], dead[1::2]
        v = f_v[torch.randint(len(f_v), (len(from_image),), generator=generator).to(f_v.device)]
        s = f_s[torch.randint(len(f_s), (len(from_sound),), generator=generator).to(f_s.device)]
        _, s_recalled = self.recall(v, "image")
        _, v_recalled = self.recall(s, "sound")
        for slots, image_rows, sound_rows in ((from_image, v, s_recalled), (from_sound, v_recalled, s)):
            self.memory_image[slots] = image_rows.to(self.memory_image.dtype)
            self.memory_sound[slots] = sound_rows.to(self.memory_sound.dtype)
        self.usage_image[dead] = 1.0 / n
        self.usage_sound[dead] = 1.0 / n
        return dead

    def sound_cycle(self, f_s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """S -> I_pseudo -> S': the sound addresses M_s and reads M_v (I_pseudo); I_pseudo addresses M_v, reads M_s."""
        _, i_pseudo = self.recall(f_s, "sound")
        _, s_prime = self.recall(i_pseudo, "image")
        return i_pseudo, s_prime

    def image_cycle(self, f_v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """V -> S_pseudo -> V', the mirror of sound_cycle."""
        _, s_pseudo = self.recall(f_v, "image")
        _, v_prime = self.recall(s_pseudo, "sound")
        return s_pseudo, v_prime
