"""DICOMweb over HTTPS (PS3.18): a thin adapter over ``Archive.client(principal)``."""

from dicomguard.web.app import create_app
from dicomguard.web.server import serve_https

__all__ = ["create_app", "serve_https"]
