"""The dead-letter topic's consumer: a queryable summary for operators."""
