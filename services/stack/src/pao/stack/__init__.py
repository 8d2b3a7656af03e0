"""PAO operator commands."""
