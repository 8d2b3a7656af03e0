"""The PAO fulfilment service."""
