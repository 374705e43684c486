import asyncio
import weakref

from voicewire.transceiver.timer_heap import TimerHeap


async def test_fires_in_deadline_order_only_the_latest_deadline_per_key():
    loop = asyncio.get_running_loop()
    fired = []
    heap = TimerHeap(loop, lambda key, now: fired.append(key))
    start = loop.time()
    heap.schedule("a", start + 0.03)
    heap.schedule("b", start + 0.01)
    heap.schedule("a", start + 0.02)  # supersedes a's first deadline
    heap.schedule("c", start + 0.015)
    heap.schedule("c", None)  # cancelled
    await asyncio.sleep(0.06)
    assert fired == ["b", "a"]
    assert len(heap) == 0


async def test_a_fired_key_may_reschedule_itself():
    loop = asyncio.get_running_loop()
    times = []

    def fire(key, now):
        times.append(now)
        if len(times) < 5:
            heap.schedule(key, now + 0.005)

    heap = TimerHeap(loop, fire)
    heap.schedule("tick", loop.time())
    await asyncio.sleep(0.1)
    assert len(times) == 5
    assert all(later > earlier for earlier, later in zip(times, times[1:], strict=False))


class Key:
    pass


async def test_superseded_and_cancelled_entries_let_go_of_their_key():
    loop = asyncio.get_running_loop()
    heap = TimerHeap(loop, lambda key, now: None)
    cancelled, superseded = Key(), Key()
    heap.schedule(cancelled, loop.time() + 30)
    heap.schedule(superseded, loop.time() + 30)
    heap.schedule(superseded, loop.time() + 0.01)  # the 30 s entry stays in the heap, stale
    heap.schedule(cancelled, None)
    refs = [weakref.ref(cancelled), weakref.ref(superseded)]
    del cancelled
    assert refs[0]() is None, "a cancelled key is kept until its old deadline"
    await asyncio.sleep(0.03)  # the superseded key fires
    del superseded
    assert refs[1]() is None, "a superseded key is kept until its old deadline"
    assert len(heap) == 0
