"""The processes of a cache pass under torch.distributed, stepping together: every process runs
each step and waits for the others, and a failure in one stops them all."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class World:
    """The processes of a pass: those of torch.distributed's default group, or this one alone."""

    def __init__(self) -> None:
        import torch.distributed as dist

        active = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        self.rank, self.size = (dist.get_rank(), dist.get_world_size()) if active else (0, 1)
        # Object collectives on the CPU whatever the backend (NCCL needs a device per process).
        self.group = (dist.new_group(backend="gloo")
                      if active and dist.get_backend() != "gloo" else None)

    @property
    def role(self) -> str:
        """This process's part in a distributed pass, for messages; ``""`` alone."""
        return f" (rank {self.rank} of a {self.size}-process pass)" if self.size > 1 else ""

    def step(self, work: Callable[[], Any]) -> list[Any]:
        """Run ``work`` here and wait for the other processes; return every process's result.

        If ``work`` raised in any process, every process raises: that error where it happened,
        a RuntimeError naming the failed process elsewhere (so that none waits forever).
        """
        if self.size == 1:
            return [work()]
        import torch.distributed as dist

        try:
            result, failure = work(), None
        except BaseException as error:  # KeyboardInterrupt too: the others must not hang
            result, failure = None, error
        gathered: list[Any] = [None] * self.size
        message = None if failure is None else f"{type(failure).__name__}: {failure}"
        dist.all_gather_object(gathered, (message, result), group=self.group)
        if failure is not None:
            raise failure
        for rank, (message, _) in enumerate(gathered):
            if message is not None:
                raise RuntimeError(f"process {rank} of this {self.size}-process cache pass "
                                   f"failed ({message}); the rows committed so far are kept: "
                                   "run the same pass again to resume it.")
        return [value for _, value in gathered]

    def agree(self, terms: Callable[[], dict[str, str]], what: str = "cache pass") -> None:
        """Compute ``terms`` (what defines the pass, by name) in every process and raise a
        ValueError in every process, naming each term that differs, unless all agree.
        ``what`` names the pass in the message.

        Values are said in the message when short, unless they start with ``"digest "``.
        """
        gathered = self.step(terms)
        names = list(dict.fromkeys(name for found in gathered for name in found))
        different = [name for name in names if len({found.get(name) for found in gathered}) > 1]
        if not different:
            return
        parts = []
        for name in different:
            values = [found.get(name) for found in gathered]
            if all(value is not None and len(value) <= 40 and not value.startswith("digest ")
                   for value in values):
                said = [f"{value} in process {rank}" for rank, value in enumerate(values)]
                parts.append(f"{name} ({', '.join(said)})")
            else:
                others = [rank for rank, value in enumerate(values) if value != values[0]]
                parts.append(f"{name} (process {', '.join(map(str, others))} differs from "
                             "process 0)")
        raise ValueError(f"the processes of this {self.size}-process {what} disagree on "
                         f"{'; '.join(parts)}; give every process the same model, images and "
                         "arguments.")

    def close(self) -> None:
        """Destroy the CPU process group this pass created, if any."""
        if self.group is not None:
            import torch.distributed as dist

            dist.destroy_process_group(self.group)
            self.group = None
