"""Inventory service: stock per SKU and reservations; see :mod:`.app` and :mod:`.handlers`."""
