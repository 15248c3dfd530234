"""Compatibility alias of :mod:`harvester.analysis` (renamed from ``views``, which collided with
``harvester.store.views``) for modules not yet updated; to be removed once nothing imports it."""

from harvester.analysis import bundled_views, connect, define_views, queries_dir  # noqa: F401
