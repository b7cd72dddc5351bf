"""What a backbone's frozen features say about a dataset itself: likely label errors (and, later, near-duplicates and the embedding map)."""
