"""The HTTP service: ``create_app()`` builds the ASGI app; ``antioom serve`` runs it."""

from antioom.server.app import create_app
from antioom.server.settings import Settings

__all__ = ["Settings", "create_app"]
