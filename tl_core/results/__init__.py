"""What a finished run gives: evaluation, predictions, exports and bundles."""
