"""Running a command's cache pass in several processes of one machine under torchrun."""

from __future__ import annotations

import argparse
import os
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

    The command's arguments never pass through torchrun's own parser, which would take an option
    of the command for one of its own (``--m`` for its ``--module``, ``--master-addr``, ...).

    Args:
        argv: The command line, without the program name; its ``--nproc`` is dropped.
        nproc: Number of processes.

    Returns:
        0, or the exit code of the process that failed first (128 + N for a signal N).
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    rest, skip = [], False
    for arg in argv:
        if skip or arg == "--nproc" or arg.startswith("--nproc="):
            skip = arg == "--nproc"
            continue
        rest.append(arg)
    launcher = get_args_parser().parse_args(
        ["--standalone", f"--nproc-per-node={nproc}", "-m", "captum_clipspan.cli"])
    launcher.training_script_args = rest
    try:
        run(launcher)
    except ChildFailedError as failure:
        code = failure.get_first_failure()[1].exitcode
        return code if code > 0 else 128 - code
    return 0
