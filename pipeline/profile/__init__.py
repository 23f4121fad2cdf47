"""The profile stage: per-customer state folded from resolved events, merges, consent and erasure."""
