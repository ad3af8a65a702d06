"""SQL migrations of the shipping service."""
