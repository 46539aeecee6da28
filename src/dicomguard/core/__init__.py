"""The core: ingest, retrieve, query, erase. Protocol adapters call only this package."""
