"""The model registry: MLflow runs, registered versions, aliases, manifests."""
