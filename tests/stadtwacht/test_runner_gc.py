"""The runner's start-up gc.freeze: long-lived objects leave the collector's generations, later ones do not."""

import gc
import threading
import time

import pytest

import stadtwacht.runner as runner_module
from stadtwacht.runner import freeze_startup_heap
from tests.reliability.harness import in_process_runner


def test_freeze_startup_heap_freezes_what_exists_and_nothing_later():
    gc.unfreeze()
    startup = [[i] for i in range(2000)]  # containers standing for the layer, indexes, config
    try:
        before = gc.get_freeze_count()
        freeze_startup_heap()
        frozen = gc.get_freeze_count()
        assert frozen >= before + len(startup)
        later = [[i] for i in range(500)]  # a batch's garbage: tracked by the collector as usual
        assert gc.get_freeze_count() == frozen and gc.is_tracked(later[0])
    finally:
        gc.unfreeze()  # the rest of the test session collects as usual


@pytest.mark.broker
def test_the_startup_collection_runs_before_the_kafka_clients_start(kafka_bootstrap, topic_prefix, tmp_path,
                                                                    monkeypatch):
    """The full collection holds the GIL for 0.1-0.5 s: with the clients' IO threads running they missed their
    turn ("Task ... ran for 0.478s ... blocking the event loop" at every few starts)."""
    _, runner, _ = in_process_runner(kafka_bootstrap, topic_prefix, tmp_path, "kafka-python", [], connect=False)
    before = {t.ident for t in threading.enumerate()}

    def new_io_threads() -> list[str]:
        return [t.name for t in threading.enumerate() if t.name.startswith("kafka-io") and t.ident not in before]

    at_collection: list[list[str]] = []
    monkeypatch.setattr(runner_module, "freeze_startup_heap",
                        lambda: (at_collection.append(new_io_threads()), freeze_startup_heap()))
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not new_io_threads():  # the clients do start (the check below could fail)
            assert thread.is_alive() and time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(30)
        gc.unfreeze()
    assert at_collection == [[]]
