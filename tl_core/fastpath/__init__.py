"""Every use of private TensorFlow/Keras API, behind one switch (TRANSFERLAB_FASTPATH=0 falls back to plain Keras)."""
