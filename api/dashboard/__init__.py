"""The browser dashboard served at `/`: one HTML page and its local static assets.

The page reads everything through the `/v1` JSON API with the user's key, so the
dashboard holds no data access of its own and shows exactly what the key may see.
"""

from api.dashboard.router import router

__all__ = ["router"]
