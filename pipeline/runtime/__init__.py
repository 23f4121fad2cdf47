"""Process-level wiring: broker selection, worker start-up, the demo."""
