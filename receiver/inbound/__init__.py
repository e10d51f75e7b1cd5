"""The inbound workflow: ingest, process, derivatives, reconcile."""
