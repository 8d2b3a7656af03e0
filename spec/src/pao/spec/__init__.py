"""The PAO catalog specification: what an item is, how it is checked and rendered."""
