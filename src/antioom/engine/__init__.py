"""The streaming engine: source → CSV records → validated rows → batches → sink."""
