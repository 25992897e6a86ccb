"""The engine behind :class:`~latewise.index.LateInteractionIndex`, one module per stage.

- :mod:`~latewise.engine.writer`: check the input, encode, pool, compress, store.
- :mod:`~latewise.engine.view`: the in-memory view of a collection, kept in step with Chroma.
- :mod:`~latewise.engine.cache`: the cached stored vectors the view holds.
- :mod:`~latewise.engine.first_stage`: candidates for a query.
- :mod:`~latewise.engine.ranker`: exact MaxSim over candidates, and hits.
- :mod:`~latewise.engine.settings`: storage settings, search sizes, write counters.

Importing it imports no torch; its modules load torch when they first compute.
"""
