"""`torchrun --nproc-per-node 2 -m attd_cli run`: two CPU processes (gloo) train like one.

Each process takes its share of every batch; weighted shares and averaged gradients make
each step the one a single process takes on the whole batch, so the two runs end with
the same weights up to float rounding. Only rank 0 writes the run folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

ARGS = [
    "run", "--task", "listops",
    "--set", "task.num_train=60", "--set", "task.num_val=8", "--set", "task.num_test=8",
    "--set", "task.max_length=80",
    "--set", "model.backbone.d_model=8", "--set", "model.backbone.n_layers=1",
    "--set", "model.backbone.d_state=4", "--set", "model.adapter.rank=1",
    "--set", "train.batch_size=15",  # shares of 8 and 7: the weighting matters
    "--set", "train.epochs=2", "--set", "train.log_every=1",
    "--set", "train.eval_every=null",  # validate after each epoch, not the preset's every 50
    "--set", "runtime.threads=1",
]  # fmt: skip


def attd(*prefix: str, out, cache) -> subprocess.CompletedProcess:
    env = {**os.environ, "ATTD_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, *prefix, "-m", "attd_cli", *ARGS, "--output-dir", str(out)]
    result = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.mark.slow
def test_two_processes_train_like_one(tmp_path):
    cache = tmp_path / "cache"
    attd(out=tmp_path / "single", cache=cache)
    torchrun = ["-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone"]
    result = attd(*torchrun, out=tmp_path / "ddp", cache=cache)
    assert result.stdout.count("output") == 1  # rank 1 prints nothing

    single = load_file(str(tmp_path / "single" / "checkpoint" / "model.safetensors"))
    ddp = load_file(str(tmp_path / "ddp" / "checkpoint" / "model.safetensors"))
    assert single.keys() == ddp.keys()
    for key in single:
        torch.testing.assert_close(ddp[key], single[key], rtol=1e-4, atol=1e-5, msg=key)
    summaries = [
        json.loads((tmp_path / run / "summary.json").read_text()) for run in ("single", "ddp")
    ]
    assert [summary["train"]["steps"] for summary in summaries] == [8, 8]

    records = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").open()]
    losses = [r["loss"] for r in records if r["event"] == "train"]
    alone = [json.loads(line) for line in (tmp_path / "single" / "metrics.jsonl").open()]
    expected = [r["loss"] for r in alone if r["event"] == "train"]
    assert losses == pytest.approx(expected, rel=1e-4)  # the whole batch's loss, logged once
    assert losses[0] != losses[-1]  # the weights moved: agreeing was not trivial
    validated = [(r["step"], r["epoch"]) for r in records if r["event"] == "val"]
    assert validated == [(4, 1), (8, 2)]  # rank 0 alone validates, the others do not wait
    expected = [r["accuracy"] for r in alone if r["event"] == "val"]
    assert [r["accuracy"] for r in records if r["event"] == "val"] == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "ddp", "single"]
    assert {p.name for p in (tmp_path / "ddp").iterdir()} == {
        "config.yaml",
        "metrics.jsonl",
        "checkpoint",
        "summary.json",
    }


@pytest.mark.slow
def test_a_diverging_run_stops_every_process(tmp_path):
    """Every process sees the whole batch's loss, so all of them stop at the same step:
    none waits forever for the others, and the run folder holds no result."""
    env = {**os.environ, "ATTD_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    torchrun = ["-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone"]
    out = tmp_path / "ddp"
    command = [
        sys.executable, *torchrun, "-m", "attd_cli", *ARGS,
        "--set", "train.lr=1e6", "--output-dir", str(out),
    ]  # fmt: skip
    result = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL
    )
    assert result.returncode != 0, result.stdout + result.stderr
    assert result.stderr.count("error: training diverged at step") == 2, result.stderr
    assert sorted(path.name for path in out.iterdir()) == ["config.yaml", "metrics.jsonl"]
