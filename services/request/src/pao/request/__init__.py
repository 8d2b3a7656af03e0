"""The PAO request service."""
