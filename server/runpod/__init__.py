"""RunPod serverless front end."""
