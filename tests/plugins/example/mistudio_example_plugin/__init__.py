"""An example miStudio plugin package: every kind of extension, declared as entry points in
``pyproject.toml`` and written against miStudio's public interfaces only."""
