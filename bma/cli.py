"""Run one trial without Ray or MLflow.

    bma-trial --set variant=bma --set pairing_ratio=0.1 --set train_size=2000 --out out/trial
    bma-trial --config trial.yaml --out out/trial            # YAML: nested sections or dotted keys
    bma-trial --config trial.yaml --out out/trial --resume   # continue from out/trial/trial_state.pt

Prints one line per epoch, writes the checkpoint after every epoch and ``metrics.json`` (history and final) at the
end. Exit codes: 0 done, 2 bad configuration or data.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bma.config import ConfigError, TrialConfig, expand_feature_preset
from bma.data.errors import DataError
from bma.data.regimes import RegimeError


def flatten_mapping(mapping: dict, prefix: str = "") -> dict:
    """{'model': {'tau_m': 0.1}} -> {'model.tau_m': 0.1}; dotted keys pass through. Sources stay nested dicts."""
    flat = {}
    for key, value in mapping.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_mapping(value, path + "."))
        else:
            flat[path] = value
    return flat


MAX_CONFIG_BYTES = 1 << 20  # a trial's settings are a short text file; anything larger is a mistake


def config_from_args(config_file: str | None, overrides: list[str]) -> TrialConfig:
    """The trial config of --config and the --set overrides; ConfigError naming the option at fault. The YAML goes
    through the bounded reader study specs use (bma/text_input.py owns it: UTF-8 text only, duplicate keys and
    alias bombs refused before anything is built)."""
    from bma.text_input import SpecError, parse_yaml, read_text_file

    flat: dict = {}
    if config_file:
        path = Path(config_file)
        try:
            loaded = parse_yaml(read_text_file(path, "a YAML file of trial settings", MAX_CONFIG_BYTES), str(path))
        except SpecError as exc:
            raise ConfigError([f"--config {problem}" if problem.startswith(str(path)) else
                               f"--config {path}: {problem}" for problem in exc.problems]) from None
        loaded = {} if loaded is None else loaded
        if not isinstance(loaded, dict):
            raise ConfigError([f"--config {path}: expected a mapping of settings (nested sections or dotted keys), "
                               f"got {type(loaded).__name__}"])
        flat.update(flatten_mapping(expand_feature_preset(loaded)))
    for item in overrides:
        if "=" not in item:
            raise ConfigError([f"--set {item}: expected KEY=VALUE"])
        key, value = item.split("=", 1)
        try:
            parsed = parse_yaml(value, f"--set {key.strip()}")
        except SpecError as exc:
            raise ConfigError([f"--set {item}: expected KEY=VALUE with VALUE a YAML scalar or list (e.g. 0.1, bma, "
                               f"[1, 5, 20]); {exc.problems[0].splitlines()[0]}"]) from None
        if key.strip() == "features":  # --set features=esc50: a named preset (bma.config.FEATURE_PRESETS)
            flat.update({k: v for k, v in expand_feature_preset({"features": parsed}).items()
                         if not any(o.split("=", 1)[0].strip() == k for o in overrides)})
            continue
        flat[key.strip()] = parsed
    return TrialConfig.from_flat(flat)


def out_problem(out: Path) -> str | None:
    """Why ``out`` cannot be the trial's folder (it, or the nearest of its parents that exists, is a file), or
    None. Nothing is created here."""
    probe = out
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        where = "is a file" if probe == out else f"is below {probe}, a file"
        return f"--out {out}: {where}; expected a folder (created if missing) for the checkpoint and metrics.json"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bma-trial", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML file of trial settings (nested sections or dotted keys)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one setting")
    parser.add_argument("--out", default="out/trial", help="folder for the checkpoint and metrics.json")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    args = parser.parse_args(argv)

    from bma.trainer import CHECKPOINT_FILE, fit

    try:
        cfg = config_from_args(args.config, args.set)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    if problem := out_problem(out):
        print(f"error: {problem}", file=sys.stderr)
        return 2
    resume = None
    if args.resume:
        if not (out / CHECKPOINT_FILE).is_file():
            print(f"error: --resume: no checkpoint at {out / CHECKPOINT_FILE}", file=sys.stderr)
            return 2
        resume = out

    def report(epoch: int, metrics: dict, state) -> None:
        state.save(out)
        shown = {k: v for k, v in metrics.items() if k.startswith(("loss/total", "acc/", "assoc/"))}
        print(f"epoch {epoch:3d}  " + "  ".join(f"{k}={v:.4f}" for k, v in sorted(shown.items())), flush=True)

    try:
        result = fit(cfg, report, resume_from=resume)
    except (DataError, RegimeError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "metrics.json.tmp"
    tmp.write_text(json.dumps({"config": cfg.to_flat(), "regime": result.regime_counts, "final": result.final,
                               "history": result.history}, indent=1, default=float))
    tmp.replace(out / "metrics.json")
    print(json.dumps({k: round(v, 4) for k, v in result.final.items() if k.startswith(("acc/", "assoc/", "retrieval/"))}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
