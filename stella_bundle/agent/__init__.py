"""The long-running agent's operator side: metrics, health endpoints, periodic verification."""
