"""The client: a sans-I/O core, one transport, and the sync and async shells that drive them."""
