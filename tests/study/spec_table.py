"""The "Every setting" and short-name tables of docs/spec.md, generated from bma/config.py (the one place each
setting and its comment live). Rewrite them after adding a setting:

    .venv/bin/python -m tests.study.spec_table

The "allowed" column is the one part written by hand (what ``bma.config.validate`` checks, in words): a row keeps
the text it has; a new setting takes ALLOWED below, else only what the type implies (finite for a float).
test_spec.py checks that the tables are in sync.
"""

from __future__ import annotations

import inspect
import re
import sys
import typing
from pathlib import Path

import bma.config as C
from bma.config import FLAT_TYPES, SHORT_NAMES, TrialConfig

DOC = Path(__file__).resolve().parents[2] / "docs" / "spec.md"
SETTINGS_HEAD = ("| dotted path | short name | type | default | allowed | meaning (the comment in `bma/config.py`) |\n"
                 "|---|---|---|---|---|---|\n")
SHORT_HEAD = "| short name | dotted path |\n|---|---|\n"
SECTION_CLASSES = {"data": "DataConfig", "features": "FeatureConfig", "regime": "RegimeConfig",
                   "model": "ModelConfig", "loss": "LossConfig", "optim": "OptimConfig", "eval": "EvalConfig",
                   "image": "SourceConfig", "sound": "SourceConfig", None: "TrialConfig"}
# What validate() checks for settings added after the table was first written (a row, once in the doc, keeps its
# own text; edit it there).
ALLOWED = {
    "regime.pairs": ">= 1, or null",
    "regime.unpaired_images": ">= 0, or null",
    "regime.unpaired_sounds": ">= 0, or null",
    "regime.heldout_speaker": "an FSDD speaker name (with `data.sound.source: fsdd`), or null",
    "optim.steps": ">= 1, or null",
    "optim.round_steps": ">= 1",
    "optim.lr_control_every": ">= 1",
    "optim.lr_control_factor": "in (0, 1)",
    "optim.lr_control_patience": ">= 0",
    "model.slot_reseed_every": ">= 0",
    "model.slot_dead_usage": "in [0, 1)",
    "model.slot_reseed_source": "pairs, unpaired",
    "loss.w_variance": ">= 0",
    "loss.w_infomax": ">= 0",
    "eval.label_budgets": "distinct integers >= 1, at least one",
    "eval.xdomain_image_root": "null unless `eval.xdomain_image_source` is set",
    "eval.xdomain_sound_root": "null unless `eval.xdomain_sound_source` is set",
}
CHOICES = {  # settings whose allowed values are a tuple of bma.config: listed from it
    "loss.cycle_space": "CYCLE_SPACES",
    "optim.lr_control": "LR_CONTROLS",
    "eval.xdomain_image_source": "IMAGE_SOURCES",
    "eval.xdomain_sound_source": "SOUND_SOURCES",
}


def _comment(path: str, source: list[str]) -> str:
    """The field's end-of-line comment in bma/config.py, else the comment block right above it."""
    parts = path.split(".")
    cls = SECTION_CLASSES[parts[-2] if len(parts) > 1 else None]
    start = next(i for i, line in enumerate(source) if re.match(rf"class {cls}\b", line))
    for k in range(start + 1, len(source)):
        line = source[k]
        if line.startswith(("class ", "def ")):
            break
        m = re.match(rf"    {parts[-1]}: [^=]+=.*?(?:  # (.*))?$", line)
        if m:
            text = m.group(1)
            if not text:
                above = []
                for prev in reversed(source[start + 1:k]):
                    if not prev.strip().startswith("# "):
                        break
                    above.insert(0, prev.strip()[2:])
                text = " ".join(above)
            return text.replace("|", "\\|")
    return ""


def _type_name(hint) -> str:
    args = typing.get_args(hint)
    if typing.get_origin(hint) is tuple:
        return f"list of {args[0].__name__}"
    if args:
        return f"{[a for a in args if a is not type(None)][0].__name__} or null"
    return hint.__name__


def _value(v) -> str:
    if v is None:
        return "`null`"
    if isinstance(v, bool):
        return f"`{str(v).lower()}`"
    if isinstance(v, (list, tuple)):
        return "`[" + ", ".join(str(x) for x in v) + "]`"
    return f"`{v}`"


def _allowed(path: str, hint, kept: str | None) -> str:
    if kept is not None:
        return kept
    if path in CHOICES:
        text = ", ".join(f"`{c}`" for c in getattr(C, CHOICES[path]))
        return text + (", or null" if "null" in _type_name(hint) else "")
    text = ALLOWED.get(path, "")
    if _type_name(hint).startswith("float"):
        if not text:
            text = "finite, or null" if "null" in _type_name(hint) else "finite"
        elif text.endswith(", or null"):
            text = text[: -len(", or null")] + ", finite, or null"
        else:
            text += ", finite"
    return text


def _table(doc: str, head: str) -> tuple[int, int]:
    i = doc.index(head) + len(head)
    return i, doc.index("\n\n", i)


def render(doc: str) -> str:
    """``doc`` with both tables (and the count of settings in its text) regenerated from bma/config.py."""
    source = inspect.getsource(C).splitlines()
    i, j = _table(doc, SETTINGS_HEAD)
    kept = {}
    for row in doc[i:j].splitlines():
        cells = [c.strip() for c in row.strip("|").split(" | ")]
        kept[cells[0].strip("`")] = cells[4]
    short = {v: k for k, v in SHORT_NAMES.items()}
    defaults = TrialConfig().to_flat()
    rows = [f"| `{path}` | {f'`{short[path]}`' if path in short else ''} | {_type_name(hint)} | "
            f"{_value(defaults[path])} | {_allowed(path, hint, kept.get(path))} | {_comment(path, source)} |"
            for path, hint in FLAT_TYPES.items()]
    doc = doc[:i] + "\n".join(rows) + doc[j:]
    i, j = _table(doc, SHORT_HEAD)
    doc = doc[:i] + "\n".join(f"| `{k}` | `{v}` |" for k, v in SHORT_NAMES.items()) + doc[j:]
    return re.sub(r"\b(all|All) \d+ settings", lambda m: f"{m.group(1)} {len(FLAT_TYPES)} settings", doc)


def main() -> int:
    doc = DOC.read_text()
    new = render(doc)
    if new != doc:
        DOC.write_text(new)
        print(f"{DOC}: tables rewritten ({len(FLAT_TYPES)} settings, {len(SHORT_NAMES)} short names)")
    else:
        print(f"{DOC}: tables already in sync")
    return 0


if __name__ == "__main__":
    sys.exit(main())
