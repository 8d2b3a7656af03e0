"""PAO shared runtime."""
