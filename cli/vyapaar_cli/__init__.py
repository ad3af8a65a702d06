"""The `vyapaar` command line: what a person runs against a Vyapaar Nexus installation.

Product commands live here (``dlq``, ``top``); they read their settings from flags and the
environment and need nothing of the development stack. Other distributions add commands
through the ``vyapaar.cli`` entry-point group (see :mod:`vyapaar_cli.plugins`): the
development install adds ``vyapaar stack`` and ``vyapaar demo`` that way.
"""
