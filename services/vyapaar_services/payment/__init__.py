"""Payment service: ledger and simulated processor; see :mod:`.app` and :mod:`.handlers`."""
