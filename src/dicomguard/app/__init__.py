"""The composition root: builds the archive (core, controls, recorder) from the settings and hosts what spans them.

``archive.py`` opens an archive, ``home.py`` creates one, ``recorder.py`` is the one
subscriber that writes audit records and ledger leaves, ``services.py`` gives an
adapter every service for one principal, ``verify.py`` checks the whole archive.
Nothing in ``core/`` or the controls imports this package.
"""
