"""L7: test tools built on the public runtime: fake time, ``wait_all_blocked``, leak checks and
the pytest plugin (``plugin.py``, loaded through the ``pytest11`` entry point).

Nothing below imports from here; ``csp_mp.testing`` re-exports the public names.
"""
