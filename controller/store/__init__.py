"""Durable state behind the Store protocol."""
