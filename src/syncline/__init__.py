"""syncline: change data capture from PostgreSQL into derived views, exactly once in effect."""

__version__ = "0.1.0"
