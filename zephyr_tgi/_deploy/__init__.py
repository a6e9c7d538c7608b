"""Deployment manifests rendered from the launcher's own argument builders (Kubernetes)."""
