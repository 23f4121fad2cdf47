"""Next-best-action: the action catalogue, contact policy and (later) decisions and triggers."""
