"""The trial record: what the study engine writes to MLflow, and what the progress view and the analysis read.

One owner for the contract between the writer (trainables/tracking.py, trainables/bma_trainable.py, study/run.py)
and its readers (study/progress.py, analysis/). It imports nothing else of the package (as bmi's interface.py), so
the whole contract reads in one file and is tested without data or models.

Layout of a study in MLflow:
- one experiment per study, named after it, tagged ``STUDY``;
- one parent run per version of the study (its spec's fingerprint): tags ``ROLE=study``, ``FINGERPRINT``, ``AXES``
  (JSON list of the dotted settings the study varies besides the seed: its grid keys, its search space's keys,
  and ``ARM`` when it has named arms), ``GIT_COMMIT``; artifact ``spec.yaml``;
- one run per distinct trial, a child of the parent run (``PARENT``), named by ``run_name`` (unique in the study);
  tags below; params = every field of the flat trial config (dotted names); metrics per round, step = round, named
  as in ``METRICS``.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Iterable

# -- where ----------------------------------------------------------------------------------------------------------

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"  # the embedded default, relative to the current directory

# -- tags -----------------------------------------------------------------------------------------------------------

PARENT = "mlflow.parentRunId"  # MLflow's own nesting tag
ROLE = "bma.role"  # ROLE_STUDY on the parent run, ROLE_TRIAL on a trial's run
ROLE_STUDY, ROLE_TRIAL = "study", "trial"
STUDY = "bma.study"  # on the experiment and every run
FINGERPRINT = "bma.fingerprint"  # parent run: the spec's content hash (a changed spec gets a new parent run)
AXES = "bma.axes"  # parent run: JSON list of the study's axes (see the module doc)
GIT_COMMIT = "bma.git_commit"  # the code's commit, "-dirty" when the worktree had changes
COMMAND = "bma.command"  # parent run: the command line that launched (or last resumed) the study
PLANNED = "bma.trials_planned"  # parent run: how many trials the study will run (its distinct trials or samples)
# parent run: JSON {metric glob: delta}, the spec's analysis.sesoi (smallest effect of interest, in the metric's
# units), declared before the study runs; the reports' verdicts (gain / loss / equivalent / inconclusive) read it
SESOI = "bma.sesoi"
# parent run: prefix of one tag per precision contrast of the spec (bma.precision.<name>): JSON with the seeds used,
# the current estimate and CI, the verdict and why adding seeds stopped (or "open")
PRECISION = "bma.precision."
VARIANT = "bma.variant"  # trial: model.variant
REGIME = "bma.regime"  # trial: the regime string without the seed (regime_name)
SEED = "bma.seed"  # trial: regime.seed
TRIAL_KEY = "bma.trial_key"  # trial: trial_key(), what makes a resumed trial find its run
TRIAL_ID = "bma.trial_id"  # trial: Ray Tune's trial id (the latest attempt's)
STATUS = "bma.status"  # trial: one of STATUSES
# "interrupted": the study was stopped (Ctrl-C, SIGINT) while the trial ran; its MLflow run ends KILLED (MLflow's
# word for a run stopped from outside, neither FINISHED nor FAILED) and rerunning the study's command resumes it from
# its last checkpoint (the same run goes back to RUNNING). Never a result: the analysis does not count it.
STATUS_RUNNING, STATUS_FINISHED, STATUS_FAILED, STATUS_INTERRUPTED = "running", "finished", "failed", "interrupted"
STATUSES = (STATUS_RUNNING, STATUS_FINISHED, STATUS_FAILED, STATUS_INTERRUPTED)
MLFLOW_INTERRUPTED = "KILLED"  # the MLflow run status of an interrupted trial (and of an interrupted study's parent)
ERROR = "bma.error"  # trial: "Type: message" of the exception that failed it
ATTEMPTS = "bma.attempts"  # trial: how many times it started (restarts after a crash, resumes)
ARM = "bma.arm"  # trial: the spec's named arm; also the key of the arm in a shared trial's cell overrides
SHARED = "bma.shared"  # trial: how many grid points it counts in (when more than its own)
CELLS = "bma.cells"  # trial: JSON list, per grid point, of the settings that place it in that point's cell
CELLS_CHUNK = 7000  # MLflow tag values hold at most 8,000 characters: a long list spans bma.cells, bma.cells.1, ...
STOPPED_EARLY = "bma.stopped_early"  # trial: "true" when a search's scheduler stopped it before its last round
REGIME_COUNT = "bma.regime_count."  # trial: prefix of the sample counts of its regime (bma.regime_count.pairs)
PLACEMENT = ("bma.node_id", "bma.hostname", "bma.gpu_ids", "bma.device")  # trial: where its latest attempt ran
# trial: torch's intra-op thread count of its latest attempt (Ray sets it from the trial's CPUs); a float sum's order,
# and so the last digits of a result, depend on it: study/reproduce.py retrains with the same count
THREADS = "bma.torch_threads"

# -- the settings that name a trial --------------------------------------------------------------------------------

SEED_KEY = "regime.seed"
VARIANT_KEY = "model.variant"
# The axes of a study recorded before the parent run carried AXES (and the order tables list classic axes in).
CLASSIC_AXES: tuple[str, ...] = (
    "regime.pairing_ratio",
    "regime.train_size",
    "model.memory_slots",
    "model.tau_m",
    "loss.tau_l",
    "model.variant",
)


def trial_key(study: str, flat: dict[str, Any]) -> str:
    """The trial's identity in its study: a hash of the study's name and the trial's whole flat config."""
    blob = json.dumps({"study": study, "config": flat}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def regime_name(flat: dict[str, Any], with_seed: bool = True) -> str:
    """``p0.1_n1000_m64_tm0.1_tl0.07[_s0]``: the classic axes of a trial, compact (the REGIME tag)."""
    name = (f"p{flat['regime.pairing_ratio']:g}_n{flat['regime.train_size']}_m{flat['model.memory_slots']}"
            f"_tm{flat['model.tau_m']:g}_tl{flat['loss.tau_l']:g}")
    return name + (f"_s{flat[SEED_KEY]}" if with_seed else "")


def run_name(flat: dict[str, Any], axes: Iterable[str], key: str, arm: str | None = None) -> str:
    """``bma pairing_ratio=0.1 train_size=1000 s0 #3fa2c1``: the variant, the trial's value of each study axis, its
    seed, and the head of its trial key, which makes the name unique in the study whatever the axes."""
    parts = [str(flat.get(VARIANT_KEY, "?"))] + ([arm] if arm else [])
    for axis in axes:
        if axis in (VARIANT_KEY, SEED_KEY, ARM) or axis not in flat:
            continue
        value = flat[axis]
        parts.append(f"{axis.rsplit('.', 1)[-1]}={value:g}" if isinstance(value, float) else
                     f"{axis.rsplit('.', 1)[-1]}={value}")
    return " ".join(parts + [f"s{flat.get(SEED_KEY, '?')}", f"#{key[:6]}"])


def axes_tag(axes: Iterable[str]) -> str:
    return json.dumps(list(axes))


def read_axes(tags: dict[str, str]) -> list[str] | None:
    """The axes a parent run records, or None for a study recorded before parent runs carried them."""
    text = tags.get(AXES)
    if not text:
        return None
    try:
        axes = json.loads(text)
    except ValueError:
        return None
    return [str(a) for a in axes] if isinstance(axes, list) else None


def param_text(value: Any) -> str:
    """A setting's value as an MLflow param: lists as ``[1, 5, 20]`` (TrialConfig.from_flat reads it back)."""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


def cells_tags(cells: list[dict] | None) -> dict[str, str]:
    """SHARED and CELLS (chunked) for a trial that stands for more grid points than its own, else nothing."""
    if not cells or (len(cells) == 1 and not cells[0]):
        return {}
    text = json.dumps(cells, sort_keys=True, default=str)
    chunks = [text[i:i + CELLS_CHUNK] for i in range(0, len(text), CELLS_CHUNK)]
    return {SHARED: str(len(cells)), **{CELLS + (f".{i}" if i else ""): c for i, c in enumerate(chunks)}}


def read_cells(tags: dict[str, str]) -> list[dict] | None:
    """The cell overrides of cells_tags back (None when the run stands for its own configuration only).
    ValueError when the chunks do not make JSON."""
    names = sorted((k for k in tags if k == CELLS or k.startswith(CELLS + ".")),
                   key=lambda k: int(k.rsplit(".", 1)[1]) if k != CELLS else 0)
    text = "".join(tags[k] for k in names)
    return json.loads(text) if text else None


# -- metrics ---------------------------------------------------------------------------------------------------------

ALL_VARIANTS = ("unimodal", "paired_only", "bma")  # bma.config.VARIANTS (a test keeps the two equal)
MEMORY_VARIANTS = ("paired_only", "bma")  # the variants with slot memories and pairs
BMA_ONLY = ("bma",)


@dataclass(frozen=True)
class MetricFamily:
    """Metrics matching ``pattern`` (fnmatch), and what a reader must know of them:

    - ``family``: what kind of quantity;
    - ``direction``: which value is better, ``max`` or ``min``, or None when neither is (a count, a rate, an
      entropy);
    - ``split``: what it is measured on, ``train``, ``validation`` or ``test``; a search, a scheduler or any model
      selection reads only the first two (SELECTABLE_SPLITS);
    - ``cadence``: which rounds report it: ``round`` (every one), ``eval`` (every eval.eval_every and the last),
      ``info`` (every eval.info_every and the last);
    - ``variants``: the variants that log it (a switch of the variant may still leave it off).
    """

    pattern: str
    family: str
    direction: str | None
    split: str
    cadence: str
    variants: tuple[str, ...]
    doc: str


_ALL, _MEM = ALL_VARIANTS, MEMORY_VARIANTS
_F = MetricFamily
# Order matters: the first matching family describes a metric (specific patterns before general ones). Patterns
# follow the names bma/evaluation.py writes closely enough that a misspelt name (acc/bogus) is unknown, not a
# test-split metric.
METRICS: tuple[MetricFamily, ...] = (
    _F("loss/total", "loss", "min", "train", "round", _ALL, "the training objective, mean over a round's steps"),
    _F("loss/encoder", "loss", "min", "train", "round", _ALL, "the encoders' own objective"),
    _F("loss/val_pair*", "loss", "min", "validation", "eval", _ALL, "L_pair and its contrastive term on the "
       "validation pairs"),
    _F("loss/pair*", "loss", "min", "train", "round", _MEM, "L_pair and its terms"),
    _F("loss/unpair", "loss", "min", "train", "round", BMA_ONLY, "L_unpair (cycle consistency)"),
    _F("loss/variance", "loss", "min", "train", "round", BMA_ONLY, "switch loss.w_variance"),
    _F("loss/infomax", "loss", "min", "train", "round", BMA_ONLY, "switch loss.w_infomax"),
    _F("loss/slot_decorrelation", "loss", "min", "train", "round", _MEM, "switch loss.w_slot_decorrelation"),
    _F("acc/*_probe_[fh]*", "probe", "max", "test", "eval", _ALL, "linear-probe accuracy (acc/<probe>/k<K>: K labels "
       "per class, the mean over eval.label_draws labelled draws)"),
    _F("acc_sd/*_probe_[fh]*", "probe", None, "test", "eval", _ALL, "sd of a label-budget probe's accuracy across its "
       "labelled draws (acc_sd/<probe>/k<K>; 0 with one draw)"),
    _F("retrieval/*_mem_r[0-9]*", "retrieval", "max", "test", "eval", _MEM, "class-level recall@K in memory space"),
    _F("retrieval/*_r[0-9]*", "retrieval", "max", "test", "eval", _ALL, "class-level recall@K in the contrastive space"),
    _F("assoc/*_acc", "association", "max", "test", "eval", _MEM, "class agreement of the switched recall"),
    _F("info/n_*", "info", None, "test", "info", _ALL, "sample size and flagged-estimate counts of the probes"),
    _F("info/H_*", "info", None, "test", "info", _MEM, "entropies (nats)"),
    _F("info/eff_slots_*", "info", None, "test", "info", _MEM, "effective number of slots, exp H(W)"),
    _F("info/dH_*", "info", None, "test", "info", _MEM, "entropy changes along the cycle (nats)"),
    _F("info/dI_*", "info", None, "test", "info", _MEM, "information changes along the cycle (nats)"),
    _F("info/I_[SV]_Y/*", "info", "max", "test", "info", _MEM, "lower bounds on I(memory read; class) (nats)"),
    _F("info/I_*_Y/*", "info", "max", "test", "info", _ALL, "lower bounds on I(representation; class) (nats)"),
    _F("info/I_h*", "info", "max", "test", "info", _ALL, "InfoNCE bounds on the encoders' information (nats)"),
    _F("info/I_zv_zs/*", "info", "max", "test", "info", _ALL, "I(Z_v; Z_s) between the paired embeddings (nats)"),
    _F("info/I_*", "info", "max", "test", "info", _MEM, "mutual information through the memories (nats)"),
    _F("time/eval_s", "time", "min", "train", "eval", _ALL, "seconds of a round's evaluation"),
    _F("time/info_s", "time", "min", "train", "info", _ALL, "seconds of a round's information probes"),
    _F("time/*", "time", "min", "train", "round", _ALL, "seconds of a round's training"),
    _F("train/*", "training", None, "train", "round", _ALL, "steps done, tau_m, learning rate, re-seeded slots"),
)
XDOMAIN = "xdomain/"  # xdomain/<domain>/<metric>: a metric of METRICS measured on another domain's test data
PROGRESS_METRIC = "acc/sound_probe_h"  # what the progress view follows by default (shown, never selected on)
# The metric model selection reads (on the validation split, never the test split): the validation pair loss.
SELECTION_METRIC = "loss/val_pair"


def metric_family(name: str) -> MetricFamily | None:
    """The family of a metric name (an ``xdomain/<domain>/`` prefix is looked through), None when unregistered."""
    if name.startswith(XDOMAIN):
        parts = name.split("/", 2)
        name = parts[2] if len(parts) == 3 else name
    for family in METRICS:
        if fnmatch.fnmatchcase(name, family.pattern):
            return family
    return None


SPLITS = ("train", "validation", "test")
SELECTABLE_SPLITS = ("train", "validation")  # what a search, a scheduler or a reported "best" may select on


def direction_problem(name: str) -> str | None:
    """Why ``name`` cannot be followed or selected on (not registered, or no better value), or None: one wording
    for the driver's --metric, a search's metric and the progress view."""
    family = metric_family(name)
    if family is None:
        return (f"{name} is not a metric the trials report (bma/record.py METRICS lists the families, e.g. "
                f"{PROGRESS_METRIC}, loss/total, {SELECTION_METRIC})")
    if family.direction is None:
        return f"{name} has no better value ({family.doc}); choose a metric that is maximised or minimised"
    return None


def metric_direction(name: str) -> str | None:
    """'max' or 'min' (which value is better), None when neither is or the metric is unknown."""
    family = metric_family(name)
    return family.direction if family is not None else None


# -- the information probes' metrics: info/<quantity>/<estimator> (nats; bma/info/probes.py writes them,
# docs/information.md defines each quantity and estimator) -------------------------------------------------------

INFO_N_SAMPLES = "info/n_samples"  # the held-out rows behind every info/ estimate of its round
INFO_COUNTS = (INFO_N_SAMPLES, "info/n_estimates", "info/n_flagged")  # counts that ride with the estimates
INFO_FLAG = "info/flag/"  # info/flag/<quantity>/<estimator>: the code of why that estimate is NaN
# The two cycles of L_unpair as (source, pseudo feature): S -> I_pseudo -> S' and V -> S_pseudo -> V'
CYCLES: tuple[tuple[str, str], ...] = (("S", "Ipseudo"), ("V", "Spseudo"))


def cycle_steps(source: str, pseudo: str) -> tuple[str, str, str]:
    """A cycle's names as the probes spell them: (source -> pseudo, pseudo -> source', the whole cycle), e.g.
    ("S_Ipseudo", "Ipseudo_Sprime", "S_Sprime"). The two steps have info/dH_<step>/... (entropy change) and
    info/dI_<step>/... (class-information change); all three have info/I_<name>/... (MI between the ends)."""
    return f"{source}_{pseudo}", f"{pseudo}_{source}prime", f"{source}_{source}prime"


def _cycle_quantities() -> tuple[str, ...]:
    out: list[str] = []
    for source, pseudo in CYCLES:
        first, second, whole = cycle_steps(source, pseudo)
        out += [f"I_{first}", f"I_{second}", f"I_{whole}", f"I_{source}_Y", f"dH_{first}", f"dH_{second}",
                f"dI_{first}", f"dI_{second}"]
    return tuple(out)


# Every quantity the probes report, in the order of the plan's Table 1, with the row of that table it belongs to
TABLE1_ROWS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("H(W): addressing", ("H_Wv", "H_Ws")),
    ("H(M): slot usage", ("H_Mv", "H_Ms", "eff_slots_v", "eff_slots_s", "I_slot_class_v", "I_slot_class_s")),
    ("I(f; f_mem): recall", ("I_fv_fsmem", "I_fs_fvmem")),
    ("H(f_mem | f): association uncertainty", ("H_fsmem_given_fv", "H_fvmem_given_fs")),
    ("I(h; X_v, X_true_s): representation", ("I_hv_Xv_Xs", "I_hs_Xs_Xv", "I_hv_Xs", "I_hs_Xv", "I_hv_Y", "I_hs_Y",
                                             "I_fv_Y", "I_fs_Y")),
    ("I(Z_v; Z_s): paired learning", ("I_zv_zs",)),
    ("I(S; S'): cycle self-consistency", _cycle_quantities()),
)
INFO_QUANTITIES: dict[str, str] = {q: row for row, quantities in TABLE1_ROWS for q in quantities}
