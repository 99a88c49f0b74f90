"""Admin access: admin keys and their roles (``keys``)."""
