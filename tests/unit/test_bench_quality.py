"""``vigil bench quality`` over several seeds: per-seed records, then a median per detector."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from stream.bench_quality import DETECTORS, _parse_seeds, bench_quality_cli


def _toy(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(900, 3))
    y = np.zeros(900, dtype=np.int64)
    y[::45] = 1
    x[y == 1] += 6.0
    path = tmp_path / "toy.npz"
    np.savez(path, X=x, y=y)
    return path


def test_parse_seeds() -> None:
    assert _parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert _parse_seeds("3,1-2,3") == [3, 1, 2]
    with pytest.raises(ValueError, match="empty seed range"):
        _parse_seeds("4-2")


def test_declared_settings_are_registered() -> None:
    assert {"hst-50x9-paper", "iforest-512x8k"} <= set(DETECTORS)


def test_seeds_give_a_median_per_detector(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _toy(tmp_path)
    argv = ["--data", str(path), "--json", "--seeds", "0-2", "--detectors"]
    assert bench_quality_cli([*argv, "iforest,hst-50x9-paper,ensemble:iforest+hst-50x9-paper"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    runs = [r for r in records if "summary" not in r]
    summaries = [r for r in records if r.get("summary") == "median"]
    assert [r["seed"] for r in runs] == [0] * 3 + [1] * 3 + [2] * 3
    assert [s["detector"] for s in summaries] == [
        "iforest",
        "hst-50x9-paper",
        "ensemble:iforest+hst-50x9-paper",
    ]
    for summary in summaries:
        per_seed = [r["roc_auc"] for r in runs if r["detector"] == summary["detector"]]
        assert summary["roc_auc_per_seed"] == per_seed
        assert summary["roc_auc_median"] == pytest.approx(float(np.median(per_seed)))
        assert summary["roc_auc_first_seed"] == per_seed[0]
        assert summary["seeds"] == [0, 1, 2]
        assert summary["meets_published_best"] is None  # no published figure for "toy"
    assert summaries[0]["roc_auc_median"] > 0.95


def test_seeds_table_and_bad_seeds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _toy(tmp_path)
    argv = ["--data", str(path), "--seeds", "0,1", "--detectors", "iforest", "--max-rows", "500"]
    assert bench_quality_cli(argv) == 0
    out = capsys.readouterr().out
    assert "over seeds 0,1:" in out
    assert "median" in out
    with pytest.raises(SystemExit):
        bench_quality_cli(["--data", str(path), "--seeds", "x"])
