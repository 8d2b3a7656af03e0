"""devctl, the PAO command-line client."""
