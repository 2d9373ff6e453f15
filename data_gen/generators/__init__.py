"""Dataset generators, one module per `data.method`."""
