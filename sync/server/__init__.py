"""The reference central server (C6): WSGI app, storage backends, batch ingestion, OpenAPI."""
