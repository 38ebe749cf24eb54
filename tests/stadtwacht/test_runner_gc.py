"""The runner's start-up gc.freeze: long-lived objects leave the collector's generations, later ones do not."""

import gc

from stadtwacht.runner import freeze_startup_heap


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
