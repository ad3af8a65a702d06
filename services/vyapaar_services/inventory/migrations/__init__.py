"""SQL migrations of the inventory service."""
