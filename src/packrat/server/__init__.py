"""The inference server: dynamic batching over each model's instance pool, HTTP APIs."""
