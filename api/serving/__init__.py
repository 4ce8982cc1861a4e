"""Model serving: lazy loading into an LRU cache, per-model inference threads with
micro-batching, request parsing and the threshold decisions. Nothing here imports
torch at module import time; the first model load does."""
