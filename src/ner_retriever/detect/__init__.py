"""Type-agnostic mention detection."""
