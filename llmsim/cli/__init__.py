"""The ``llmsim`` command line: the Typer app and every command (serve, config, profiles, ctl,
fleet), option declarations and ``--version``.

The top layer: it may import every other package; nothing imports it.
"""
