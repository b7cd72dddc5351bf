"""Training: the loop and its policies, callbacks, the feature cache, feature-extraction runs, the runner."""
