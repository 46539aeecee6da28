"""The core services: one class per kind of action, one method per action (see :mod:`dicomguard.core.service`).

Built per principal by the composition root (``app.services.Services``);
adapters call them and nothing below them.
"""
