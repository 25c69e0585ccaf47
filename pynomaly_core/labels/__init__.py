"""What the analysts' labels teach the models."""
