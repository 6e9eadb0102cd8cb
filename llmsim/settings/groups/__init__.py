"""The :class:`~llmsim.settings.model.Settings` fields, one mixin per group of options.

Declaration order is the order of ``llmsim config show`` and of the configuration reference.
"""
