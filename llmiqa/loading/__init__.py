"""Finding and placing models before any weights load: checkpoints (hub ids, folders,
content identity), devices and dtypes, and the settings that choose them (runtime)."""
