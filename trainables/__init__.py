"""Ray Tune trainables and MLflow tracking around the bma science library."""
