"""Reading corpora and writing small weight files and caches."""
