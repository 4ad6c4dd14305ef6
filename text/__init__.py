"""Text front end without torch: normalisation (numbers, dates, symbols read out), SSML, chunking for
streaming, and word-time estimates. Importing any of it loads neither torch nor the engine."""
