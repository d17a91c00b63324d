"""Control: decide, from what the server observes, which plan a model should run."""
