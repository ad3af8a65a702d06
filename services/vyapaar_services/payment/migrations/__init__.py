"""SQL migrations of the payment service."""
