"""Ctrl-C as a request to stop: the first one is a flag, the second stops at once."""
import signal
import threading

import pytest

from fieldkit.train import interrupt
from fieldkit.train.config import TrainConfig
from fieldkit.train.run import prepare
from tests.conftest import DEMO_SCENE


def test_first_ctrl_c_is_a_request_and_the_second_stops_at_once(capsys):
    before = signal.getsignal(signal.SIGINT)
    with interrupt.stop_on_ctrl_c():
        assert not interrupt.requested()
        signal.raise_signal(signal.SIGINT)
        assert interrupt.requested()
        assert "Ctrl-C again" in capsys.readouterr().err
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before and not interrupt.requested()


def test_a_request_made_during_set_up_carries_into_the_nested_context():
    with interrupt.stop_on_ctrl_c():
        signal.raise_signal(signal.SIGINT)
        with interrupt.stop_on_ctrl_c():          # Trainer.train's own
            assert interrupt.requested()
        assert interrupt.requested()              # the inner exit keeps the outer's handler
        with pytest.raises(KeyboardInterrupt):
            interrupt.stop_here_if_requested()
    interrupt.stop_here_if_requested()            # outside: nothing requested


def test_outside_the_main_thread_it_changes_nothing():
    seen = []

    def body():
        with interrupt.stop_on_ctrl_c():
            seen.append(signal.getsignal(signal.SIGINT))

    before = signal.getsignal(signal.SIGINT)
    t = threading.Thread(target=body)
    t.start()
    t.join()
    assert seen == [before]


def test_ctrl_c_mid_training_stops_after_the_step_with_a_checkpoint(tmp_path):
    trainer = prepare(DEMO_SCENE, "hashgrid", tmp_path / "run",
                      TrainConfig(max_steps=50, eval_every=0, checkpoint_every=1e9,
                                  target_samples=1 << 12, init_rays=256), downscale=4)
    step = trainer.step

    def step_then_ctrl_c():
        stats = step()
        if trainer.step_count == 3:
            signal.raise_signal(signal.SIGINT)
        return stats

    trainer.step = step_then_ctrl_c
    stats = trainer.train()
    assert stats["interrupted"] and trainer.step_count == 3
    assert (tmp_path / "run" / "checkpoint" / "state.json").exists()
    assert not interrupt.requested()
