"""Running a command's cache pass in several processes of one machine under torchrun."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager


def rank() -> int:
    """This process's rank in a distributed cache pass (0 in one process)."""
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


@contextmanager
def process_group(args: argparse.Namespace) -> Iterator[None]:
    """Join the process group when started by torchrun (``WORLD_SIZE`` > 1): NCCL on CUDA, else
    gloo.

    Args:
        args: The parsed command line (its ``device`` picks the backend).
    """
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        yield
        return
    dist.init_process_group("nccl" if args.device.startswith("cuda") else "gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()


def launch(argv: list[str], nproc: int) -> int:
    """Run the same command in ``nproc`` processes of this machine under torchrun.

    Args:
        argv: The command line, without the program name; its ``--nproc`` is dropped.
        nproc: Number of processes.

    Returns:
        torchrun's exit code.
    """
    rest, skip = [], False
    for arg in argv:
        if skip or arg == "--nproc" or arg.startswith("--nproc="):
            skip = arg == "--nproc"
            continue
        rest.append(arg)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={nproc}", "-m", "captum_clipspan.cli", *rest]
    return subprocess.run(command, check=False).returncode
