"""PAO REST gateway."""
