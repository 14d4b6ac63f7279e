"""Faust table definitions of the registry (shipped as registry_app.tables)."""
