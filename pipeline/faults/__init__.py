"""``make faults``: scenarios that prove what the pipeline promises under crashes, bad input and growth."""
