"""Where registrations are written: Consul for discovery, PostgreSQL for the record."""
