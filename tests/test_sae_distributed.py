"""Data-parallel training: two local CPU processes on loopback (torchrun, gloo)."""

from __future__ import annotations

import os
import subprocess
import sys

from safetensors.torch import load_file

from mistudio.core.sae.distributed import tensors_checksum
from mistudio.core.sae.io import WEIGHTS_FILE
from mistudio.core.store.workspace import Workspace

ARGS = ["--activations", "acts", "--expansion", "4", "--k", "8", "--steps", "40",
        "--batch-size", "512", "--lr", "0.003", "--checkpoint-every", "20", "--warmup-steps", "5"]


def test_two_processes_train_in_sync_and_match_one(acts_ws: Workspace) -> None:
    env = {**os.environ, "MISTUDIO_DIST_BACKEND": "gloo", "OMP_NUM_THREADS": "1",
           "CUDA_VISIBLE_DEVICES": ""}
    # --standalone: a rendezvous on localhost at a port torchrun picks itself (no port race)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "mistudio",
           "train", *ARGS, "--name", "ddp", "--device", "cpu", "--workspace", str(acts_ws.root)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("SAE ddp:") == 1  # rank 0 alone reports
    from mistudio.cli import main

    assert main(["train", *ARGS, "--name", "single", "--device", "cpu",
                 "--workspace", str(acts_ws.root)]) == 0
    ddp = acts_ws.catalog.get("sae", "ddp").summary
    one = acts_ws.catalog.get("sae", "single").summary
    assert ddp.world_size == 2 and one.world_size == 1
    assert ddp.tokens == one.tokens == 40 * 512
    a, b = ddp.rank_checksums
    assert a == b  # the ranks ended with identical weights
    saved = load_file(str(acts_ws.root / "saes" / "ddp" / WEIGHTS_FILE))
    assert tensors_checksum(saved) == a  # and the saved file is what rank 0 reported
    assert abs(ddp.explained_variance - one.explained_variance) < 0.05
    assert ddp.explained_variance > 0.5
