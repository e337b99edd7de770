"""The live information plane of a trial (trainables/artifacts.py): drawn from the history so far at each probe
epoch, logged under info_plane/, and never an error that reaches training."""

from __future__ import annotations

import shutil
from pathlib import Path

from trainables import artifacts  # matplotlib is a dependency of the project: a missing one is a failure, not a skip


class FakeTracker:
    def __init__(self, dest: Path, fail: bool = False):
        self.dest, self.fail, self.calls = dest, fail, []

    def log_artifacts(self, folder, artifact_path=None):
        if self.fail:
            raise RuntimeError("tracking server unreachable")
        self.calls.append(artifact_path)
        shutil.copytree(folder, self.dest / artifact_path, dirs_exist_ok=True)


class Cfg:  # the fields the live plane reads from a TrialConfig
    class model:
        variant = "bma"

    class regime:
        pairing_ratio = 0.1
        train_size = 2000


def history(epochs=(5, 10, 15)):
    out = []
    for i, e in enumerate(epochs):
        out.append({"epoch": e, "loss/total": 1.0})
        out.append({"epoch": e + 1, "loss/total": 0.9, "info/n_samples": 300.0, "info/n_flagged": 0.0,
                    "info/I_zv_zs/infonce_cos": 0.5 + 0.3 * i, "info/I_S_Sprime/gauss_noise_1": 4.0 + i,
                    "info/I_fv_fsmem/gauss_noise_1": 3.0 + 0.5 * i, "info/I_S_Sprime/gaussian": 65.0 + i,
                    "info/I_zv_zs/auto": float("nan")})
    return out


def test_a_probe_epoch_logs_the_plane_png(tmp_path):
    tracker, hist = FakeTracker(tmp_path), history()
    assert artifacts.log_live_info_plane(tracker, Cfg, hist[-1], hist)
    assert tracker.calls == [artifacts.LIVE_PLANE_DIR]
    pngs = sorted(p.name for p in (tmp_path / "info_plane").iterdir())
    assert pngs == ["info_plane__bma.png"]  # PNG only: the MLflow UI shows it
    assert (tmp_path / "info_plane" / "info_plane__bma.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_epochs_without_probes_log_nothing_and_failures_never_raise(tmp_path, caplog):
    tracker, hist = FakeTracker(tmp_path), history()
    assert not artifacts.log_live_info_plane(tracker, Cfg, hist[0], hist)  # no info/ metric this epoch
    assert tracker.calls == []
    broken = FakeTracker(tmp_path, fail=True)
    with caplog.at_level("WARNING", logger="bma.trainables"):
        assert not artifacts.log_live_info_plane(broken, Cfg, hist[-1], hist)
    assert "live information plane not logged" in caplog.text


def test_only_monitors_logged_gives_no_plane(tmp_path):
    # a history with a Gaussian MI only (a monitor of a near-deterministic map): nothing finite to put on the plane
    hist = [{"epoch": 1, "info/I_zv_zs/gaussian": 5.0, "info/I_S_Sprime/gaussian": 65.0}]
    assert artifacts.render_info_plane(hist, tmp_path, "bma", 0.1, 2000) == []
