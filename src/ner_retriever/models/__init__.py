"""Language models, the mention encoder, the projection head, dense encoders."""
