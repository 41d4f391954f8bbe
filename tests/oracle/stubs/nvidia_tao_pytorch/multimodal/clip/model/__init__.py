"""Test-only stand-in: TAO checkpoints are not loaded in the tests."""
