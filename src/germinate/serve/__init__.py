"""`germinate serve`: the model behind an HTTP API and an upload page."""
