"""Two nodes on this machine: two launchers of one gloo CPU process each, meeting on 127.0.0.1 as two machines
meet on a cluster (torchrun's c10d rendezvous, and accelerate launch with recipes/accelerate/multi_node.yaml).

Each node has its own datasets cache (a node's local disk); the output folder is either shared (one folder,
as on a shared file system) or node-local (`training.save_on_each_node`, a folder per node). Every run goes
through tests/probe_run.py, which records per process its final weights, texts tokenized and files written.
The reference is the same recipe on 2 processes of one node: the same 2 ranks, seeds and micro-batches, and
a gloo all-reduce of 2 tensors sums them in the same order whichever machine the peer is on, so the 2-node run
must match it to the bit, not merely within a tolerance.
"""

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROOT
from test_distributed import BIN, launch, ranks, recipe_for
from test_pretrain import WORDS, write_jsonl

from recipekit.outputs.checkpoints import checkpoint_problem

MULTI_NODE = ROOT / "recipes" / "accelerate" / "multi_node.yaml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_launcher(kind: str, node: int, port: int) -> list[str]:
    if kind == "torchrun":
        return [str(BIN / "torchrun"), "--nnodes", "2", "--nproc_per_node", "1", "--node_rank", str(node),
                "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}"]
    return [str(BIN / "accelerate"), "launch", "--config_file", str(MULTI_NODE), "--num_machines", "2", "--num_processes", "2",
            "--machine_rank", str(node), "--main_process_ip", "127.0.0.1", "--main_process_port", str(port)]


def two_nodes(kind: str, tmp: Path, probe: Path, recipe: str, *args, node_args=((), ()), node_env=({}, {})) -> list[dict]:
    """Both nodes' launchers, each with its own datasets cache; returns per node its exit status, output and end time."""
    port = free_port()
    procs, logs = [], []
    for node in (0, 1):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_DATASETS_CACHE": str(tmp / f"cache-node{node}"), **node_env[node]}
        out, err = open(tmp / f"node{node}.out", "w"), open(tmp / f"node{node}.err", "w")  # noqa: SIM115 - closed below
        cmd = [*node_launcher(kind, node, port), str(ROOT / "tests" / "probe_run.py"), str(probe), recipe, *args, *node_args[node]]
        procs.append(subprocess.Popen(cmd, env=env, cwd=tmp, stdout=out, stderr=err, text=True))
        logs.append((out, err))
        if node == 0:
            # Node 0 first: its launcher then hosts the rendezvous store, as the endpoint's machine does on a
            # cluster (on loopback both match 127.0.0.1, and the first to bind the port hosts it).
            time.sleep(3)
    ended = [None, None]
    deadline = time.time() + 600
    while None in ended and time.time() < deadline:
        for node, proc in enumerate(procs):
            if ended[node] is None and proc.poll() is not None:
                ended[node] = time.time()
        time.sleep(0.2)
    results = []
    for node, proc in enumerate(procs):
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for f in logs[node]:
            f.close()
        results.append({"returncode": proc.returncode, "ended": ended[node],
                        "stdout": (tmp / f"node{node}.out").read_text(), "stderr": (tmp / f"node{node}.err").read_text()})
    return results


def pooled_recipe(model: str, out: Path) -> dict:
    """6 optimizer steps of 16 reviews (8 per process, no accumulation on 2 processes), a checkpoint every 2."""
    recipe = recipe_for(model, out, per_device_train_batch_size=8, max_steps=6, save_strategy="steps", save_steps=2, eval_strategy="no")
    recipe["batching"]["global_batch_size"] = 16
    return recipe


def scores(out: Path) -> dict:
    """A run's validation and test scores, without its timings (seconds, samples per second)."""
    run = json.loads((out / "metrics.json").read_text())
    return {split: {k: v for k, v in run[split].items() if k != "runtime" and not k.endswith("_per_second")}
            for split in ("validation", "test") if split in run}


def single_node_reference(recipe: dict, tmp: Path) -> tuple[dict, Path]:
    """The recipe on 2 processes of one node: the numbers the 2-node runs must reproduce."""
    path = tmp / "recipe.yaml"
    path.write_text(json.dumps(recipe))
    launcher = [str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_port", str(free_port())]
    done = launch(launcher, tmp / "probe", str(path), tmp=tmp)
    assert done.returncode == 0, done.stderr[-3000:]
    return ranks(tmp / "probe")[0], Path(recipe["training"]["output_dir"])


@pytest.fixture(scope="module")
def pooled_reference(tiny_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("one-node")
    return single_node_reference(pooled_recipe(tiny_model, tmp / "out"), tmp)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["torchrun", "accelerate"])
def test_two_nodes_write_one_shared_folder_once_and_train_like_one_node(kind, pooled_reference, tiny_model, tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(json.dumps(pooled_recipe(tiny_model, tmp_path / "shared")))
    nodes = two_nodes(kind, tmp_path, tmp_path / "probe", str(path))
    assert [n["returncode"] for n in nodes] == [0, 0], nodes[0]["stderr"][-3000:] + nodes[1]["stderr"][-3000:]
    rank0, rank1 = ranks(tmp_path / "probe")
    reference, reference_dir = pooled_reference

    # Bit-identical to 2 processes on one node: the same weights, the same scores to the last digit.
    assert rank0["weights_sha256"] == rank1["weights_sha256"] == reference["weights_sha256"]
    assert scores(tmp_path / "shared") == scores(reference_dir)
    assert [h["loss"] for h in rank0["log_history"] if "loss" in h] == [h["loss"] for h in reference["log_history"] if "loss" in h]

    # The shared folder is written by the global main process only, each file once; status.json twice
    # (running, then finished). Rank 1 is the first process of node 1, and writes nothing.
    assert rank1["writes"] == []
    writes = rank0["writes"]
    assert {w: writes.count(w) for w in set(writes) if writes.count(w) > 1} == {"status.json": 2}
    assert {"recipe.yaml", "data_report.json", "predictions.csv", "metrics.json"} <= set(writes)
    assert json.loads((tmp_path / "shared" / "status.json").read_text())["status"] == "finished"
    # checkpoint-2 was rotated out: save_total_limit's default keeps the last two (no evaluation, so no best).
    assert sorted(p.name for p in (tmp_path / "shared").glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-6"]
    # One console: the data report and the model line are printed by the global main process alone.
    assert nodes[0]["stdout"].count("data report") == 1 and nodes[1]["stdout"].count("data report") == 0

    # The datasets cache is prepared once per node, each in its own node's cache: node 1 tokenized the
    # same texts for itself rather than reading node 0's disk.
    assert rank0["tokenized_texts"] == rank1["tokenized_texts"] >= 272 + 48 + 119
    for node in (0, 1):
        assert list((tmp_path / f"cache-node{node}").rglob("*.arrow")), f"node {node} cached nothing"


def mlm_recipe(tmp: Path, out: Path) -> dict:
    """Masked-LM pretraining from scratch: a 2-layer, 32-wide BERT and a WordPiece tokenizer trained on the corpus
    (by each node for itself: the training is deterministic, so both nodes hold the same vocabulary)."""
    import random

    rng = random.Random(5)
    train = write_jsonl(tmp / "corpus.jsonl", [" ".join(rng.choices(WORDS, k=15)) for _ in range(160)])
    return {
        "model": {"init": "scratch", "family": "bert", "head": "masked_lm", "head_options": {"block_size": 32},
                  "config": {"num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64,
                             "max_position_embeddings": 64}},
        "tokenizer": {"train": {"vocab_size": 400, "min_frequency": 1}},
        "data": {"train_file": train, "validation_split": 0.1},
        "batching": {"global_batch_size": 16},
        "training": {"output_dir": str(out), "max_steps": 6, "per_device_train_batch_size": 8, "learning_rate": 1.0e-2,
                     "logging_steps": 1, "save_strategy": "no", "report_to": "none", "seed": 0, "disable_tqdm": True},
    }


@pytest.mark.slow
def test_masked_lm_pretraining_on_two_nodes_matches_one_node(tmp_path):
    reference_tmp = tmp_path / "one-node"
    reference_tmp.mkdir()
    reference, reference_dir = single_node_reference(mlm_recipe(tmp_path, reference_tmp / "out"), reference_tmp)
    path = tmp_path / "recipe.yaml"
    path.write_text(json.dumps(mlm_recipe(tmp_path, tmp_path / "shared")))
    nodes = two_nodes("torchrun", tmp_path, tmp_path / "probe", str(path))
    assert [n["returncode"] for n in nodes] == [0, 0], nodes[0]["stderr"][-3000:] + nodes[1]["stderr"][-3000:]
    rank0, rank1 = ranks(tmp_path / "probe")
    assert rank0["weights_sha256"] == rank1["weights_sha256"] == reference["weights_sha256"]
    assert scores(tmp_path / "shared") == scores(reference_dir)
    assert scores(reference_dir)["validation"]["perplexity"] > 1.0
    assert rank1["writes"] == []
    assert json.loads((tmp_path / "shared" / "metrics.json").read_text())["manifest"]["batch"] == {
        "per_device": 8, "processes": 2, "gradient_accumulation_steps": 1, "global": 16}


@pytest.mark.slow
def test_node_local_disks_a_killed_node_and_resume_on_each(pooled_reference, tiny_model, tmp_path):
    # Each node writes its own folder (save_on_each_node); node 1's process is SIGKILLed right after
    # checkpoint-4, as an out-of-memory killer or a pre-empted node would stop it.
    path = tmp_path / "recipe.yaml"
    recipe = pooled_recipe(tiny_model, tmp_path / "unused")
    recipe["training"]["save_on_each_node"] = True
    path.write_text(json.dumps(recipe))
    folders = [tmp_path / "node0-disk", tmp_path / "node1-disk"]
    own = tuple([f"training.output_dir={folder}"] for folder in folders)
    nodes = two_nodes("torchrun", tmp_path, tmp_path / "probe-killed", str(path), node_args=own,
                      node_env=({}, {"PROBE_KILL_AT_STEP": "4"}))
    killed_at = float((tmp_path / "probe-killed" / "killed-rank1").read_text())
    assert nodes[0]["returncode"] != 0 and nodes[1]["returncode"] != 0
    # The survivor stopped within seconds (not after a 30-minute collective time-out), with one line naming the lost rank.
    assert nodes[0]["ended"] - killed_at < 60
    # (Trainer's progress bar leaves its last state without a newline: the line may follow it.)
    lost = re.findall(r"error: [^\n]*", nodes[0]["stderr"])
    assert len(lost) == 1 and lost[0].startswith("error: launch: lost rank 1 of 2 (its process died"), nodes[0]["stderr"][-3000:]
    node0 = json.loads((folders[0] / "status.json").read_text())
    assert node0["status"] == "failed" and node0["reason"] == lost[0].removeprefix("error: ")
    # Node 1's process died without a word: its folder still says running, and nothing claims it finished.
    assert json.loads((folders[1] / "status.json").read_text())["status"] == "running"
    for node, folder in enumerate(folders):
        assert not (folder / "metrics.json").exists()
        assert (folder / "recipe.yaml").is_file()
        # Every node holds a complete checkpoint of its own: weights, optimizer, state, its process's RNG.
        assert checkpoint_problem(folder / "checkpoint-4") is None
        assert {"model.safetensors", "optimizer.pt", "scheduler.pt", "trainer_state.json", f"rng_state_{node}.pth"} <= {
            p.name for p in (folder / "checkpoint-4").iterdir()}

    # --resume on both nodes, each from its own disk: the same final numbers as the uninterrupted run.
    resumed = two_nodes("torchrun", tmp_path, tmp_path / "probe-resumed", str(path), "--resume", node_args=own)
    assert [n["returncode"] for n in resumed] == [0, 0], resumed[0]["stderr"][-3000:] + resumed[1]["stderr"][-3000:]
    reference, reference_dir = pooled_reference
    rank0, rank1 = ranks(tmp_path / "probe-resumed")
    assert rank0["weights_sha256"] == rank1["weights_sha256"] == reference["weights_sha256"]
    for folder in folders:
        assert scores(folder) == scores(reference_dir)
        assert json.loads((folder / "status.json").read_text())["status"] == "finished"
        assert (folder / "predictions.csv").read_text() == (reference_dir / "predictions.csv").read_text()
        assert (folder / "model.safetensors").is_file() and (folder / "trainer_state.json").is_file()
    steps = [h["step"] for h in rank0["log_history"] if "loss" in h]
    assert steps == [1, 2, 3, 4, 5, 6]  # steps 1-4 restored from checkpoint-4, 5-6 trained after the restart

    # Node 1's folder is a run like any other: `run.py predict` on it reproduces its predictions file.
    written = pd.read_csv(folders[1] / "predictions.csv")
    written[["text", "label"]].to_csv(tmp_path / "test.csv", index=False)
    again = subprocess.run([sys.executable, str(ROOT / "run.py"), "predict", str(folders[1]), "--input", str(tmp_path / "test.csv"),
                            "--output", str(tmp_path / "again.csv")], capture_output=True, text=True, timeout=600, check=False)
    assert again.returncode == 0, again.stderr[-3000:]
    assert list(pd.read_csv(tmp_path / "again.csv")["predicted"]) == list(written["predicted"])


@pytest.mark.slow  # a real run.py process (imports: ~20 s on 2 busy cores); test_launch checks the same line in-process
def test_node_rank_out_of_range_is_one_line_before_anything_is_written(tiny_model, tmp_path):
    # What a launcher that numbers the nodes itself (srun exporting SLURM_NODEID, a hand-written script) would
    # pass with a third node on a 2-node job.
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps(pooled_recipe(tiny_model, tmp_path / "out")))
    env = {**os.environ, "GROUP_RANK": "2", "GROUP_WORLD_SIZE": "2", "RANK": "2", "WORLD_SIZE": "2", "OMP_NUM_THREADS": "1"}
    env.pop("LOCAL_RANK", None)
    done = subprocess.run([sys.executable, str(ROOT / "run.py"), str(recipe)], env={**env, "RANK": "0"},
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        ("error: launch: node rank 2 (GROUP_RANK) is out of range for 2 (GROUP_WORLD_SIZE); valid: 0 to 1; "
        "number the nodes from 0 (torchrun --node_rank, accelerate --machine_rank, SLURM_NODEID)")
    ]
    assert not (tmp_path / "out").exists()
