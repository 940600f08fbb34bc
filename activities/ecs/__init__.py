"""The ECS provider's parts: imagedefinitions.json and the revision it makes, the service and its deployments."""
