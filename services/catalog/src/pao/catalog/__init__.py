"""The PAO catalog service."""
