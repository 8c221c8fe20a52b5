"""Training the projection head."""
