"""The Ray layer's tasks and actors: thin wrappers that declare resources around domain code."""
