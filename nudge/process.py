"""Process-wide settings shared by the long-running processes (`nudge api`, `nudge worker`)."""

from __future__ import annotations

import gc

#: Young-generation threshold: collect after this many objects allocated (net), not 700.
YOUNG_GENERATION_THRESHOLD = 100_000


def settle_garbage_collector() -> None:
    """Tune the garbage collector for a server that has finished starting up.

    What exists now lives as long as the process: frozen, it is left out of the collector's
    full passes, which otherwise re-scan all of it every few thousand objects allocated
    (measured: over half the CPU of accepting a 500-event batch).

    And the young generation is collected every 100,000 objects, not 700: a 500-event batch
    in the API, or a 2,000-event drain in the applier, keeps ~10,000-40,000 objects alive until
    it is stored, so at 700 the collector ran dozens of times per batch, promoting and
    re-scanning them, and found nothing to free (measured: 26 us of CPU per accepted event,
    a third of the applier's CPU per event). Garbage in reference cycles is still collected,
    a little later: at most a few tens of MB wait for it.
    """
    gc.freeze()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, 10, 10)
