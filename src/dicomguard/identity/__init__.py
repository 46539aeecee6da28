"""Users, credentials and (later) sessions and policy."""
