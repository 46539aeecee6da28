"""Authorization by Cedar policies (ADR 0003): the engine, the schema and the shipped default policies."""
