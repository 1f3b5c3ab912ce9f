"""farm-app backend: a small FastAPI service built and packaged by farm."""
