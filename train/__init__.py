"""Training, evaluation and publishing scripts (python -m train.train | train.evaluate | train.publish)."""
