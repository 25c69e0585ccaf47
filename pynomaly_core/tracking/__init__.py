"""MLflow: the tracking store and its helpers (`store`)."""
