"""SQL migrations of the analytics service (the read model)."""
