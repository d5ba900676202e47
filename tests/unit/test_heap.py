import gc
import weakref

from shared.heap import freeze_startup_heap


class Node:
    pass


def test_start_up_garbage_is_collected_and_what_lives_is_frozen():
    survivor, garbage = Node(), Node()
    garbage.itself = garbage  # a cycle: only the cyclic collector frees it
    freed = weakref.ref(garbage)
    del garbage
    try:
        freeze_startup_heap()
        assert freed() is None
        assert gc.get_freeze_count() > 0
        assert not any(tracked is survivor for tracked in gc.get_objects())  # out of every later collection
    finally:
        gc.unfreeze()
    assert any(tracked is survivor for tracked in gc.get_objects())
