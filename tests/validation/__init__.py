"""Tests of lacmfer.validation."""
