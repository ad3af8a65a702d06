"""SQL migrations of the notification service."""
