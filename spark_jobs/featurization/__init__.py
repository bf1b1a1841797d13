"""The featurize job's pieces: its inputs (listing, confinement, errors), decoding, executor-side inference."""
