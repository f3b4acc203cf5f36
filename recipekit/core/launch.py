"""How this process was launched (python, torchrun, accelerate launch) and what that launch can actually run.

Launchers start processes before any of our code runs, so a launch that cannot work (more processes than
GPUs, DeepSpeed that is not installed, `accelerate launch --num_processes 2` that silently started one
process) is caught here, when the recipe is validated, before anything is loaded, trained or written.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import threading
import time

import torch


def launch_problems(kw: dict) -> list[str]:
    """Problems with `training:` keys (as coerced from the recipe) given how this process was launched."""
    out = []
    env = os.environ
    if kw.get("deepspeed") and importlib.util.find_spec("deepspeed") is None:
        out.append(
            f"training.deepspeed: {kw['deepspeed']!r} needs DeepSpeed, which is not installed; pip install deepspeed "
            "on a CUDA machine, or drop the key and launch with recipes/accelerate/multi_gpu.yaml (DDP) or fsdp.yaml"
        )
    launched = env.get("ACCELERATE_MIXED_PRECISION")
    if launched in ("bf16", "fp16") and not kw.get(launched):
        given = ", ".join(f"{k}: {str(kw[k]).lower()}" for k in ("bf16", "fp16") if k in kw)
        out.append(
            f"training.{launched}: the accelerate launch asks for {launched} mixed precision but the recipe sets {given}; "
            f"drop bf16/fp16 from the recipe to follow the launcher, or launch with --mixed_precision no"
        )
    if env.get("ACCELERATE_USE_FSDP", "").lower() == "true" and kw.get("use_cpu"):
        # accelerate drops FSDP for CPU processes, while from_pretrained still leaves the weights of every
        # process but the first on the meta device (fsdp_cpu_ram_efficient_loading): a crash deep in Trainer.
        out.append(
            "launch: FSDP shards a model across GPUs, but this run trains on the CPU (no GPU found, or training.use_cpu: true), "
            "where accelerate does not apply FSDP; launch CPU processes with recipes/accelerate/multi_gpu.yaml"
        )
    local_processes = int(env.get("LOCAL_WORLD_SIZE", "1"))
    gpus = torch.cuda.device_count()
    if local_processes > 1 and not kw.get("use_cpu") and gpus and local_processes > gpus:
        out.append(
            f"launch: the launcher started {local_processes} processes on this machine but it has {gpus} GPU(s); "
            f"use --num_processes {gpus} (accelerate launch) or --nproc_per_node {gpus} (torchrun)"
        )
    # `accelerate launch --num_processes N` without a multi-process config or flag runs ONE process (its
    # simple launcher only sets MASTER_ADDR): training would silently use 1/N of the hardware asked for.
    if "ACCELERATE_USE_CPU" in env and "MASTER_ADDR" in env and "WORLD_SIZE" not in env:
        out.append(
            "launch: accelerate launch was asked for several processes but started one; add --multi_gpu "
            "(on a CPU-only machine it starts CPU processes that train with gloo), "
            "or pass --config_file recipes/accelerate/multi_gpu.yaml"
        )
    out += rank_problems(env)
    return out


def rank_problems(env) -> list[str]:
    """A rank the launch cannot have: a launcher that sets RANK and WORLD_SIZE itself (srun exporting
    SLURM_PROCID, a hand-written script) would otherwise wait for a peer that never comes, or fail deep in
    torch.distributed. (torchrun's static rendezvous hangs before our code runs on a --node_rank out of
    range; with --rdzv_backend c10d the rendezvous assigns the ranks, so no node rank can be wrong.)"""
    out = []
    for rank_key, size_key, what in (("GROUP_RANK", "GROUP_WORLD_SIZE", "node rank"), ("RANK", "WORLD_SIZE", "process rank")):
        rank, size = env.get(rank_key), env.get(size_key)
        if rank is None or size is None:
            continue
        if not (rank.isdigit() and size.isdigit() and int(size) >= 1):
            out.append(f"launch: {rank_key}={rank!r}, {size_key}={size!r}: a {what} and a count must be whole numbers, the count 1 or more")
        elif int(rank) >= int(size):
            out.append(
                f"launch: {what} {rank} ({rank_key}) is out of range for {size} ({size_key}); valid: 0 to {int(size) - 1}; "
                "number the nodes from 0 (torchrun --node_rank, accelerate --machine_rank, SLURM_NODEID)"
            )
    return out[:1]  # a node rank out of range puts the process rank out of range too: one line says it


def busy_elsewhere(samples: int = 5, interval_s: float = 0.05) -> int:
    """Runnable processes other than this one, right now: /proc/loadavg's running count, less ourselves,
    the median of a few reads (the load averages lag by a minute and would miss a job that just started)."""
    counts = []
    for i in range(samples):
        try:
            with open("/proc/loadavg") as f:
                running = int(f.read().split()[3].split("/")[0])
        except (OSError, ValueError, IndexError):
            return 0  # not Linux: assume the cores are ours
        counts.append(max(running - 1, 0))
        if i + 1 < samples:
            time.sleep(interval_s)
    return sorted(counts)[len(counts) // 2]


def choose_threads(on_cpu: bool) -> str | None:
    """Set torch's CPU threads to the cores free for each of this machine's processes, and say so; None when
    the user chose (OMP_NUM_THREADS) or a GPU computes. OpenMP threads wait for one another at every op: one
    thread descheduled by another busy process stalls the rest (a 1x8 training step went from 0.03 s to 2.2 s
    with one competing process on 2 cores), while one thread fewer costs at most its share."""
    if not on_cpu or os.environ.get("OMP_NUM_THREADS"):
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    local = max(int(os.environ.get("LOCAL_WORLD_SIZE", "1")), 1)
    others = busy_elsewhere()
    # The other processes of this launch are starting too and count as busy: leave them out of `others`.
    free = max(cores - max(others - (local - 1), 0), 1)
    threads = max(free // local, 1)
    torch.set_num_threads(threads)
    busy = f", {others} runnable elsewhere" if others else ""
    share = f" for each of {local} processes" if local > 1 else ""
    return f"threads: {threads} of {cores} cores{share}{busy} (set OMP_NUM_THREADS to choose)"


# What gloo and NCCL raise in a process whose peer died (SIGKILL, out of memory, a node gone): the
# connection closes at once, so the survivors fail in seconds, not after TrainingArguments.ddp_timeout.
PEER_LOST = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "Connection refused",
             "NCCL communicator was aborted", "remote process exited", "Socket Timeout")

# (host, port) of every rank's lifeline, gathered when the process group starts.
_lifelines: list[tuple[str, int]] = []
# rank -> the one-line problem that rank stopped on, as it told this process's lifeline before exiting.
_last_words: dict[int, str] = {}


def open_lifeline() -> None:
    """A listening socket per process, its address shared with every rank: the kernel closes it when the
    process dies, so after a failed collective a survivor can tell which ranks are gone (connection refused,
    or no answer from a node that went down) and name them."""
    import torch.distributed as dist

    if _lifelines or not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("0.0.0.0", 0))
    server.listen(64)

    def answer():
        while True:
            try:
                conn = server.accept()[0]
            except OSError:
                return
            with conn:
                try:  # a probe (lost_ranks) closes at once; a rank that stops sends `rank<TAB>problem` first
                    conn.settimeout(2.0)
                    data = b""
                    while chunk := conn.recv(65536):
                        data += chunk
                    if data:
                        rank, _, words = data.decode("utf-8", "replace").partition("\t")
                        _last_words[int(rank)] = words
                        conn.sendall(b"ok")
                except (OSError, ValueError):
                    pass

    threading.Thread(target=answer, daemon=True, name="recipekit-lifeline").start()
    everyone = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, (reachable_address(), server.getsockname()[1]))
    _lifelines.extend(everyone)


def reachable_address() -> str:
    """This node's address as the main node reaches it: the interface that routes to MASTER_ADDR (a UDP
    'connect' sends nothing)."""
    master = os.environ.get("MASTER_ADDR", "127.0.0.1")
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((master, 9))
            return probe.getsockname()[0]
    except OSError:
        return socket.gethostbyname(socket.gethostname())


def lost_ranks(timeout_s: float = 3.0) -> list[int]:
    me = int(os.environ.get("RANK", "0"))
    lost = []
    for rank, (host, port) in enumerate(_lifelines):
        if rank == me:
            continue
        try:
            socket.create_connection((host, port), timeout=timeout_s).close()
        except OSError:
            lost.append(rank)
    return lost


def tell_peers(problem: str) -> str | None:
    """Before this process exits on `problem` (a bad row in its own shard, say), hand the line to every other
    rank's lifeline, so that each survivor, whose next collective then fails, says what stopped the run and
    where rather than only that a rank is gone. Returns the line as the others will print it, naming this
    rank; None outside a multi-process launch."""
    if not _lifelines:
        return None
    me, world = int(os.environ.get("RANK", "0")), len(_lifelines)
    for rank, (host, port) in enumerate(_lifelines):
        if rank == me:
            continue
        try:
            with socket.create_connection((host, port), timeout=2.0) as conn:
                conn.sendall(f"{me}\t{problem}".encode())
                conn.shutdown(socket.SHUT_WR)
                conn.recv(2)  # stored on that side before this process exits and its connections close
        except OSError:
            pass  # that rank is gone already: nothing to tell
    return f"rank {me} of {world}: {problem}"


def lost_rank_problem(e: BaseException) -> str | None:
    """One line for a collective that failed because another process stopped: the problem it stopped on
    when it said (tell_peers), else the lost rank(s); None for any other error."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world < 2 or not any(marker in str(e) for marker in PEER_LOST):
        return None
    if _last_words:
        rank = min(_last_words)
        return f"rank {rank} of {world}: {_last_words[rank]}"
    lost = lost_ranks()
    if not lost:
        return None  # every rank still answers: not a lost process; the error stays as it was
    me = int(os.environ.get("RANK", "0"))
    who = ("rank " if len(lost) == 1 else "ranks ") + ", ".join(map(str, lost))
    return (
        f"launch: lost {who} of {world} (its process died: killed, out of memory, or its node went down; see that "
        f"node's log); rank {me} stopped, the run is marked failed; relaunch every node with --resume to continue "
        "from the last checkpoint complete on every node"
    )
