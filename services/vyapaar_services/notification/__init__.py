"""Notification service: records customer messages; see :mod:`.app` and :mod:`.handlers`."""
