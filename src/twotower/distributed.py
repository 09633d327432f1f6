"""Training on several processes with torch.distributed: the process group `torchrun` describes, which
process leads, and `twotower train --workers N` as torchrun on this machine, over loopback only.

Every process runs the same `train`; each tower training is collective (DistributedDataParallel), and the
stages that are not tower training (ranker trees, index, stores, writing the model folder) run on rank 0.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Iterator

import torch.distributed as dist

LOOPBACK = "127.0.0.1"
TIMEOUT = timedelta(minutes=30)      # how long a rank waits at a collective (e.g. for rank 0's validation)


@dataclass(frozen=True)
class Group:
    """This process's place among the training processes: rank, how many (world), how many on this machine."""

    rank: int = 0
    world: int = 1
    local_world: int = 1

    @property
    def leader(self) -> bool:
        """Rank 0: the process that validates, checkpoints and writes the model."""
        return self.rank == 0


def current() -> Group:
    """The process group joined by `process_group`, or a group of one."""
    if not (dist.is_available() and dist.is_initialized()):
        return Group()
    return Group(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def under_torchrun() -> bool:
    """True in a process that torchrun (or another launcher with its environment) started."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


@contextmanager
def process_group() -> Iterator[Group]:
    """Join the process group the environment describes (gloo: the towers train on CPU) for the block;
    without torchrun, or with one process, nothing to join."""
    if not under_torchrun() or int(os.environ["WORLD_SIZE"]) < 2:
        yield current()
        return
    dist.init_process_group("gloo", timeout=TIMEOUT)
    try:
        yield current()
        dist.barrier()      # no rank tears gloo down while another still talks to it (that aborts the process)
    finally:
        dist.destroy_process_group()


def loopback_interface() -> str:
    """The name of the loopback network interface (lo on Linux, lo0 on macOS)."""
    names = [name for _, name in socket.if_nameindex()]
    return next((n for n in names if n.startswith("lo")), "lo")


def free_port() -> int:
    """A TCP port free on the loopback address now."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def torchrun_command(program: list[str], workers: int, port: int) -> list[str]:
    """`python -m torch.distributed.run` starting `workers` processes of `program` (a script and its
    arguments, or `-m module ...`) on this machine, the rendezvous on the loopback address."""
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", str(workers),
            "--master-addr", LOOPBACK, "--master-port", str(port), *program]


def loopback_env(workers: int) -> dict[str, str]:
    """This process's environment for torchrun's processes: gloo's connections over the loopback interface,
    and the cores shared out among them (unless the caller set these)."""
    env = {**os.environ, "MASTER_ADDR": LOOPBACK}
    iface = loopback_interface()
    env.setdefault("GLOO_SOCKET_IFNAME", iface)
    env.setdefault("TP_SOCKET_IFNAME", iface)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))
    return env


def launch(args: list[str], workers: int) -> int:
    """Run `twotower ARGS` as `workers` processes under torchrun, talking over loopback only; the exit
    status (non-zero when any process failed)."""
    return subprocess.call(torchrun_command(["-m", "twotower.cli", *args], workers, free_port()),
                           env=loopback_env(workers))
