"""Datasets: scanning and checks (image and text), splits, archives, decoding, the image cache, demo data."""
