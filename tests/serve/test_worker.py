"""A service process starts with the garbage collector paused over its imports and first version, and leaves
what start-up made out of later collections."""

from __future__ import annotations

import gc
import subprocess
import sys

from twotower.serve.worker import collector_paused


def test_the_collector_is_off_inside_and_on_after_with_startup_objects_frozen():
    assert gc.isenabled()
    frozen = gc.get_freeze_count()
    try:
        with collector_paused():
            assert not gc.isenabled()
            kept = [[i] for i in range(1000)]          # tracked containers made during start-up
        assert gc.isenabled()
        assert gc.get_freeze_count() >= frozen + len(kept)
    finally:
        gc.unfreeze()                                   # the test process's other objects collect as before


def test_an_error_in_startup_still_turns_the_collector_back_on():
    try:
        with collector_paused():
            raise RuntimeError("the model did not open")
    except RuntimeError:
        pass
    finally:
        gc.unfreeze()
    assert gc.isenabled()


def test_importing_the_worker_module_leaves_the_heavy_imports_to_the_paused_start():
    probe = ("import sys, twotower.serve.worker; "
             "print(sorted(m for m in ('twotower.serve.app', 'torch', 'fastapi', 'faiss') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"
