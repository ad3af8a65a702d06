"""Shipping service: shipments and a simulated carrier; see :mod:`.app` and :mod:`.handlers`."""
