"""The call store's schema migrations (Alembic), run by the bridge itself at start-up.

``CallStore.migrate()`` upgrades to ``head`` programmatically; no ``alembic.ini`` is needed.
To add a revision, write ``versions/rNNNN_<what>.py`` by hand (see ``script.py.mako``):
``revision`` is the file's ``NNNN`` and ``down_revision`` the previous one.
"""
