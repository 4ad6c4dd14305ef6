"""The streaming core shared by every front end: settings, lifecycle, streams, voices, errors."""
