"""Criterions of this package (method-specific losses register here)."""
