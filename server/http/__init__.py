"""HTTP front end: health, metrics, voices, and the OpenAI-compatible speech API."""
