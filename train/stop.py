"""A training run told to stop finishes its step, saves its state and exits, so that ``--resume`` loses nothing.

A long run on a machine lent for a while (a session's CPU, a preemptible GPU) is ended from outside: by SIGTERM, or by
Ctrl-C. Killed mid-step, it would lose every step since its last ``--save-every`` save. Inside ``GracefulStop`` the
first SIGTERM or SIGINT only sets a flag, which the trainer reads after each step and after each epoch's validation; a
second one gets the signal's usual effect at once (KeyboardInterrupt for Ctrl-C, the end of the process for SIGTERM).

Ctrl-C in a terminal, or a kill of the process group, reaches the DataLoader workers too: they ignore both signals
(``ignore_stop_signals``, their ``worker_init_fn``) and are shut down by the trainer once it has saved. Under torchrun,
every rank asks the others at each step (``requested(world, device)``), so they stop after the same step.
"""

from __future__ import annotations

import signal
import threading

import torch
import torch.distributed as dist

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class TrainingStopped(Exception):
    """Raised by the trainer after saving its state, when a signal asked it to stop."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention for a process ended by a signal


class GracefulStop:
    """Catch SIGTERM and SIGINT while inside; restore the previous handlers on leaving.

    Outside the main thread, where Python cannot install handlers, it catches nothing and ``requested`` stays False.
    """

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:  # asked twice: stop waiting for the step
            signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
            signal.raise_signal(signum)
            return
        self.signum = signum
        print(f"\n{signal.Signals(signum).name}: stopping after this step, its state saved for --resume "
              "(send it again to stop at once)", flush=True)

    def requested(self, world: int = 1, device: torch.device | str = "cpu") -> bool:
        """Whether a signal asked to stop; under DDP, whether any rank's did (every rank must call it each step)."""
        if world <= 1:
            return self.signum is not None
        flag = torch.tensor([0 if self.signum is None else self.signum], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if self.signum is None and int(flag):
            self.signum = int(flag)
        return bool(int(flag))


def ignore_stop_signals(worker_id: int | None = None) -> None:
    """A DataLoader ``worker_init_fn``: the worker leaves SIGTERM and SIGINT to the trainer, which ends its step and
    saves before the workers go (a worker that took Ctrl-C would die under it)."""
    for signum in SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
