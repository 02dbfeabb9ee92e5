"""The application: its models (``app.models``) and, while the example is kept, its command line."""
