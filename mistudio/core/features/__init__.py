"""Feature discovery and analysis: statistics, examples, logit lens, neighbours, labels, map."""
