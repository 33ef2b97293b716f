"""A signal asks a training run to stop after its step (train.stop); a second one stops it at once."""

import os
import signal
import threading

import pytest
import torch

from train.stop import GracefulStop, TrainingStopped, ignore_stop_signals


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_the_first_signal_only_asks_and_the_handlers_come_back_on_leaving(signum):
    before = signal.getsignal(signum)
    with GracefulStop() as stop:
        assert not stop.requested()
        os.kill(os.getpid(), signum)  # delivered to this (the main) thread before the next line runs
        assert stop.requested() and stop.signum == signum
    assert signal.getsignal(signum) is before
    assert TrainingStopped(signum).exit_code == 128 + signum


def test_a_second_ctrl_c_interrupts_at_once():
    with GracefulStop() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_outside_the_main_thread_it_catches_nothing():
    seen = {}

    def run():
        with GracefulStop() as stop:
            seen["handler"] = signal.getsignal(signal.SIGTERM)
            seen["requested"] = stop.requested()

    before = signal.getsignal(signal.SIGTERM)
    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert seen == {"handler": before, "requested": False}


class _WorkerSignals(torch.utils.data.Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, index):  # runs in the worker process
        return torch.tensor([signal.getsignal(s) is signal.SIG_IGN for s in (signal.SIGTERM, signal.SIGINT)])


def test_data_loader_workers_leave_the_signals_to_the_trainer():
    loader = torch.utils.data.DataLoader(_WorkerSignals(), num_workers=1, worker_init_fn=ignore_stop_signals)
    assert all(bool(batch.all()) for batch in loader)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # not in this process
