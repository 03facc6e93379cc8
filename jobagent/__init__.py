"""The extended job agent (xJA) and the site pilot factory.

An agent runs on a free batch slot, polls the registry for PoD servers that need workers,
attaches as a Dask worker, or falls back to ordinary batch work so the slot is never wasted.
"""

__all__: list[str] = []
